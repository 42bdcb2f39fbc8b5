from django.contrib.auth import get_user_model
from django.core.management import call_command


def test_creates_one_staff_account_with_a_random_password(db, capsys):
    call_command("ensure_local_staff")
    first = capsys.readouterr().out
    password = first.split("with password ")[1].split()[0]
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_staff and admin.check_password(password) and len(password) >= 16

    call_command("ensure_local_staff")
    assert "none created" in capsys.readouterr().out
    assert get_user_model().objects.filter(is_staff=True).count() == 1
    call_command("ensure_local_staff", "--username", "other")
    assert not get_user_model().objects.filter(username="other").exists()
