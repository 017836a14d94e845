"""Request bodies that refuse what they do not accept."""

from __future__ import annotations

from collections.abc import Mapping

from rest_framework import serializers


class StrictInputSerializer(serializers.Serializer):
    """A request body whose unknown or read-only members are a 400 naming each of them.

    A write that silently drops a member it cannot apply (``PATCH {"budget": "5"}`` answering
    200) makes a client believe a change happened. ``read_only_names`` lists the members of
    the resource that exist but cannot be written through this body, so that the error says
    "read-only" rather than "unknown".
    """

    read_only_names: tuple[str, ...] = ()

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            refused = sorted(str(name) for name in data if name not in writable)
            if refused:
                raise serializers.ValidationError(
                    {
                        name: [
                            "This field is read-only."
                            if name in self.read_only_names or name in self.fields
                            else "Unknown field."
                        ]
                        for name in refused
                    }
                )
        return super().to_internal_value(data)
