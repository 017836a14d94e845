"""The dashboard page, its session login (Django's own views) and the site's icon."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.templatetags.static import static
from django.urls import reverse_lazy
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET

from dashboard.selectors import AGENT_LIMIT, dashboard_state


@login_required(login_url=reverse_lazy("dashboard:login"))
@ensure_csrf_cookie
def dashboard(request):
    """The live page: the first paint comes from the database, then the WebSocket."""
    state = dashboard_state(request.user)
    return render(
        request,
        "dashboard/index.html",
        {"state": state, "agent_limit": AGENT_LIMIT},
    )


class DashboardLoginView(auth_views.LoginView):
    template_name = "dashboard/login.html"
    redirect_authenticated_user = True
    next_page = reverse_lazy("dashboard:index")


class DashboardLogoutView(auth_views.LogoutView):
    next_page = reverse_lazy("dashboard:login")


@require_GET
def favicon(request):
    """Browsers ask every page's host for /favicon.ico: answer with the project's icon rather
    than a 404 on every load (the dashboard, the admin, the API docs)."""
    return HttpResponseRedirect(static("dashboard/favicon.svg"))
