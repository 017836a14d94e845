"""Password guessing is throttled on every login: the admin's, the dashboard's and the API's.

Failures are counted per username and per address (django-axes); past the limit, that login
is refused — the right password included — until the cool-off has passed or an operator
unlocks it in the admin. Forms show a page saying so and for how long; the API answers 429
``rate-limited`` with ``Retry-After``.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

PASSWORD = "the-right-password-1"
LOGINS = ["admin", "dashboard", "api"]


@pytest.fixture
def person(user_factory):
    """A staff operator (so that the admin login succeeds too) with a known password."""
    user = user_factory(username="person", staff=True, operator=True)
    user.set_password(PASSWORD)
    user.save()
    return user


def login(kind: str, username: str, password: str, *, address: str = "127.0.0.1"):
    """One login attempt as a browser (forms) or a client (API) from ``address``."""
    if kind == "api":
        return APIClient().post(
            "/api/v1/auth/token",
            {"username": username, "password": password},
            format="json",
            REMOTE_ADDR=address,
        )
    path = "/admin/login/" if kind == "admin" else "/dashboard/login/"
    return Client(REMOTE_ADDR=address).post(path, {"username": username, "password": password})


def succeeded(kind: str, response) -> bool:
    if kind == "api":
        return response.status_code == 200 and "token" in response.json()
    return response.status_code == 302  # the form redirects after a login


def assert_locked(kind: str, response, *, duration: str) -> None:
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    if kind == "api":
        assert response["Content-Type"] == "application/problem+json"
        body = response.json()
        assert body["type"].endswith("/rate-limited/")
        assert "temporarily locked" in body["detail"]
        assert duration in body["detail"]
    else:
        page = response.content.decode()
        assert "Sign-in temporarily locked" in page
        assert "this username or from this address" in page
        assert f"Try again in {duration}" in page


@pytest.mark.parametrize("kind", LOGINS)
def test_60_wrong_passwords_then_the_right_one_is_refused(person, kind):
    # given: someone guessing the password
    guesses = [login(kind, "person", f"guess-{n}") for n in range(60)]

    # when: the right password comes next
    response = login(kind, "person", PASSWORD)

    # then: the guesses failed, and the login is locked for the cool-off (15 minutes)
    assert not any(succeeded(kind, guess) for guess in guesses)
    assert not succeeded(kind, response)
    assert_locked(kind, response, duration="15 minutes")
    assert int(response["Retry-After"]) == 900


@pytest.mark.parametrize("kind", LOGINS)
def test_after_the_cool_off_the_right_password_works_again(person, kind, settings):
    # given: a short cool-off, and a locked login
    settings.AXES_COOLOFF_TIME = timedelta(seconds=1)
    settings.AXES_FAILURE_LIMIT = 3
    for n in range(3):
        login(kind, "person", f"guess-{n}")
    locked = login(kind, "person", PASSWORD)
    assert_locked(kind, locked, duration="1 second")

    # when: the cool-off passes
    time.sleep(1.5)

    # then: the right password logs in
    assert succeeded(kind, login(kind, "person", PASSWORD))


@pytest.mark.parametrize("kind", LOGINS)
def test_failures_from_one_address_lock_every_username_from_it(person, kind, settings):
    settings.AXES_FAILURE_LIMIT = 10
    # given: ten failures from one address, each for another username
    for n in range(10):
        login(kind, f"someone-{n}", "guess", address="203.0.113.7")

    # when/then: from that address even the right password of another user is refused
    assert_locked(kind, login(kind, "person", PASSWORD, address="203.0.113.7"), duration="15")
    # while from another address that user logs in
    assert succeeded(kind, login(kind, "person", PASSWORD, address="198.51.100.2"))


@pytest.mark.parametrize("kind", LOGINS)
def test_failures_for_one_username_lock_it_from_every_address(person, kind, settings):
    settings.AXES_FAILURE_LIMIT = 10
    # given: ten failures for one username, each from another address
    for n in range(10):
        login(kind, "person", "guess", address=f"203.0.113.{n + 1}")

    # when/then: that username is refused from a fresh address too
    assert_locked(kind, login(kind, "person", PASSWORD, address="198.51.100.9"), duration="15")


def test_an_operator_unlocks_a_locked_login_in_the_admin(person, user_factory, settings):
    settings.AXES_FAILURE_LIMIT = 3
    # given: a locked login
    for n in range(3):
        login("api", "person", f"guess-{n}", address="203.0.113.50")
    assert login("api", "person", PASSWORD, address="203.0.113.50").status_code == 429

    # when: an operator (staff, not superuser) finds it in the admin and deletes its attempts
    operator = user_factory(username="desk-operator", staff=True, operator=True)
    admin = Client()
    admin.force_login(operator)
    changelist = reverse("admin:axes_accessattempt_changelist")
    listing = admin.get(changelist)
    attempts = list(AccessAttempt.objects.values_list("pk", flat=True))
    unlocked = admin.post(
        changelist,
        {"action": "delete_selected", ACTION_CHECKBOX_NAME: attempts, "post": "yes"},
    )

    # then: the right password works again
    assert listing.status_code == 200
    assert "person" in listing.content.decode()
    assert unlocked.status_code == 302
    assert not AccessAttempt.objects.exists()
    assert succeeded("api", login("api", "person", PASSWORD, address="203.0.113.50"))
