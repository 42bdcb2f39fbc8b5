"""What django-axes counts failed logins by (settings: AXES_*): the account and the address.

The lock-out itself is axes's: its authentication backend refuses a locked-out account or
address before the password is checked, for the admin's login form and the API's token
endpoint alike (accounts.services.obtain_token_pair turns it into 429 `login_locked`).
"""

from __future__ import annotations


def login_username(request, credentials: dict | None) -> str | None:
    """The account a login attempt names, case-folded so `Staff` and `staff` count as one."""
    username = credentials.get("username") if credentials else request.POST.get("username")
    return username.casefold() if isinstance(username, str) else None
