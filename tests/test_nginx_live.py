"""Debian's nginx with exactly config/nginx.conf (its ${...} placeholders filled as
docs/operations.md says: ports, paths and the certificate, nothing else) terminating TLS in
front of a live gunicorn with DEBUG=false. nginx runs as a child of this test with its own
prefix, pid and logs under tmp_path, never as the system service; the certificate is a
self-signed one made by openssl here."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from tests.fakes.gemini import FakeGemini, Script
from tests.live import database_url, free_port, live_gunicorn, wait_until

ROOT = Path(__file__).resolve().parent.parent
SITE_TEMPLATE = ROOT / "config" / "nginx.conf"
# The placeholders docs/operations.md hands to envsubst, and only these.
PLACEHOLDERS = {
    "SERVER_NAME",
    "HTTP_PORT",
    "HTTPS_PORT",
    "APP_ADDRESS",
    "TLS_CERTIFICATE",
    "TLS_CERTIFICATE_KEY",
}
PASSWORD = "a-long-passphrase-42"
SECRET_KEY = "x7!kq2@pz9#lm4$vn8%rt6^yw3&bc5*hd1(gf0)js-_=+ab2cd3ef4gh5"
CHUNKS = ["One", " chunk", " at", " a", " time", "."]
CHUNK_DELAY_MS = 300


def find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


NGINX = find_nginx()
OPENSSL = shutil.which("openssl")

LIVE_MARKS = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        NGINX is None,
        reason="nginx not found (Debian: apt-get install nginx-light; .ci/run installs it)",
    ),
    pytest.mark.skipif(OPENSSL is None, reason="openssl not found (apt-get install openssl)"),
]


def live(test):
    """nginx + gunicorn over the test database (PostgreSQL, like every live test)."""
    for mark in LIVE_MARKS:
        test = mark(test)
    return test


def fill_template(text: str, values: dict[str, str]) -> str:
    """envsubst with an explicit list: ${NAME} for the listed names, nothing else."""
    for name in PLACEHOLDERS:
        text = text.replace("${" + name + "}", values[name])
    return text


def test_the_site_config_has_only_the_documented_placeholders():
    found = set(re.findall(r"\$\{([A-Z_]+)\}", SITE_TEMPLATE.read_text()))
    assert found == PLACEHOLDERS
    docs = (ROOT / "docs" / "operations.md").read_text()
    envsubst_list = re.search(r"envsubst '([^']+)'", docs).group(1)
    assert set(re.findall(r"\$\{([A-Z_]+)\}", envsubst_list)) == PLACEHOLDERS


def test_client_max_body_size_matches_data_upload_max_memory_size():
    size = re.search(r"client_max_body_size (\d+)([km]?);", SITE_TEMPLATE.read_text())
    factor = {"": 1, "k": 1024, "m": 1024 * 1024}[size.group(2)]
    assert int(size.group(1)) * factor == settings.DATA_UPLOAD_MAX_MEMORY_SIZE


@dataclass
class Proxied:
    https_url: str
    http_url: str
    ssl_context: ssl.SSLContext
    fake: FakeGemini

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.https_url, verify=self.ssl_context, **kwargs)


def make_certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *(OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def main_config(prefix: Path, site: Path) -> str:
    """What /etc/nginx/nginx.conf is on a server, reduced to a private prefix: the site
    file is included unchanged inside http {}, as sites-enabled/ is."""
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As root the workers would switch to `nobody`, who cannot enter pytest's tmp_path.
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""
daemon off;
worker_processes 1;
{user}
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix / "access.log"};
{temp}
    include {site};
}}
"""


@contextlib.contextmanager
def running_nginx(prefix: Path, values: dict[str, str]) -> Iterator[subprocess.Popen]:
    site = prefix / "site.conf"
    site.write_text(fill_template(SITE_TEMPLATE.read_text(), values))
    conf = prefix / "nginx.conf"
    conf.write_text(main_config(prefix, site))
    command = [NGINX, "-p", f"{prefix}/", "-c", str(conf), "-e", str(prefix / "error.log")]
    check = subprocess.run([*command, "-t"], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    with (prefix / "stderr.log").open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGQUIT)  # graceful shutdown of master and workers
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def collect_static(static_root: Path) -> None:
    env = {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": SECRET_KEY,
        "STATIC_ROOT": str(static_root),
    }
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
    )


@pytest.fixture(scope="module")
def static_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("static")


@pytest.fixture
def proxied(tmp_path, static_root) -> Iterator[Proxied]:
    if not any(static_root.iterdir()):
        collect_static(static_root)
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    cert, key = make_certificate(prefix)
    https_port, http_port = free_port(), free_port()
    fake = FakeGemini().start()
    fake.default = Script(chunks=CHUNKS, delay_ms=CHUNK_DELAY_MS)
    origin = f"https://127.0.0.1:{https_port}"
    env = {
        "DEBUG": "false",
        "SECRET_KEY": SECRET_KEY,
        "ALLOWED_HOSTS": "127.0.0.1",
        "CSRF_TRUSTED_ORIGINS": origin,
        "TRUSTED_PROXY_COUNT": "1",
        "STATIC_ROOT": str(static_root),
        "LLM_PROVIDER": "auto",
        "GEMINI_API_KEY": "test-key-not-secret",
        "GEMINI_BASE_URL": fake.url,
        "GEMINI_TIMEOUT_MS": "5000",
    }
    context = ssl.create_default_context(cafile=str(cert))
    try:
        with live_gunicorn(env=env, tmp_path=tmp_path) as server:
            values = {
                "SERVER_NAME": "127.0.0.1",
                "HTTP_PORT": f"127.0.0.1:{http_port}",
                "HTTPS_PORT": f"127.0.0.1:{https_port}",
                "APP_ADDRESS": server.url.removeprefix("http://"),
                "TLS_CERTIFICATE": str(cert),
                "TLS_CERTIFICATE_KEY": str(key),
            }
            with running_nginx(prefix, values) as nginx:

                def answering():
                    if nginx.poll() is not None:
                        log = (prefix / "stderr.log").read_text()
                        raise AssertionError(f"nginx exited:\n{log}")
                    try:
                        return httpx.get(f"{origin}/health", verify=context, timeout=1).is_success
                    except httpx.HTTPError:
                        return False

                wait_until(answering, timeout=30, message="nginx to proxy /health")
                yield Proxied(
                    https_url=origin,
                    http_url=f"http://127.0.0.1:{http_port}",
                    ssl_context=context,
                    fake=fake,
                )
    finally:
        fake.stop()


def register_and_login(http: httpx.Client, username: str) -> dict[str, str]:
    http.post(
        "/api/auth/register", json={"username": username, "email": "", "password": PASSWORD}
    ).raise_for_status()
    access = http.post("/api/auth/token", json={"username": username, "password": PASSWORD}).json()[
        "data"
    ]["access"]
    return {"Authorization": f"Bearer {access}"}


@live
def test_a_reply_streams_through_nginx_chunk_by_chunk(proxied):
    with proxied.client(timeout=30) as http:
        auth = register_and_login(http, "streamer")
        chat_id = http.post("/api/chat", json={}, headers=auth).json()["data"]["id"]
        arrivals: list[tuple[float, dict]] = []
        with http.stream(
            "POST", f"/api/chat/{chat_id}/message", json={"message": "hi"}, headers=auth
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream"
            for line in response.iter_lines():
                if line.startswith("data: "):
                    arrivals.append((time.monotonic(), json.loads(line.removeprefix("data: "))))
    assert [event["text"] for _, event in arrivals[:-1]] == CHUNKS
    done = arrivals[-1][1]
    assert done["done"] is True and "error" not in done, done
    texts = [at for at, _ in arrivals[:-1]]
    # The upstream writes a chunk every 300 ms: a buffering proxy would deliver them together.
    gaps = [later - earlier for earlier, later in itertools.pairwise(texts)]
    assert min(gaps) > CHUNK_DELAY_MS / 1000 / 2, gaps


@live
def test_the_admin_login_works_through_nginx_with_csrf_and_secure_cookies(proxied, tmp_path):
    # The first staff account, made as docs/operations.md says (non-interactive form).
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DEBUG": "false",
        "SECRET_KEY": SECRET_KEY,
        "DJANGO_SUPERUSER_USERNAME": "ops",
        "DJANGO_SUPERUSER_EMAIL": "ops@example.com",
        "DJANGO_SUPERUSER_PASSWORD": PASSWORD,
    }
    subprocess.run(
        [sys.executable, "manage.py", "createsuperuser", "--noinput"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    login_url = "/admin/login/?next=/admin/"
    with proxied.client(follow_redirects=False) as http:
        page = http.get(login_url)
        assert page.status_code == 200
        assert any(
            c.startswith("csrftoken=") and "Secure" in c
            for c in page.headers.get_list("set-cookie")
        )
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        form = {"username": "ops", "password": PASSWORD, "next": "/admin/"}
        referer = {"Referer": f"{proxied.https_url}{login_url}", "Origin": proxied.https_url}

        # Without the form's token: refused by CSRF, not logged in.
        assert http.post(login_url, data=form, headers=referer).status_code == 403

        logged_in = http.post(
            login_url, data={**form, "csrfmiddlewaretoken": token}, headers=referer
        )
        assert logged_in.status_code == 302, logged_in.text[:500]
        assert logged_in.headers["location"] == "/admin/"
        assert any(
            c.startswith("sessionid=") and "Secure" in c and "HttpOnly" in c
            for c in logged_in.headers.get_list("set-cookie")
        )
        index = http.get("/admin/")
        assert index.status_code == 200
        assert "<strong>ops</strong>" in index.text and "Log out" in index.text
        assert "strict-transport-security" in index.headers


@live
def test_login_throttling_keys_on_the_real_client_whatever_it_forwards(proxied):
    # TRUSTED_PROXY_COUNT=1 behind this nginx: it overwrites X-Forwarded-For with the peer.
    with proxied.client() as http:
        statuses = [
            http.post(
                "/api/auth/token",
                json={"username": "nobody", "password": "wrong-password"},
                headers={"X-Forwarded-For": f"198.51.100.{i}"},
            ).status_code
            for i in range(15)
        ]
    # django-axes locks the address at its 10th failure (429 login_locked), the throttle
    # refuses the 11th (429 throttled): both key on the address nginx saw.
    assert statuses[:9] == [401] * 9
    assert set(statuses[10:]) == {429}


@live
def test_plain_http_is_redirected_and_an_oversize_body_is_a_413_envelope(proxied):
    redirect = httpx.get(f"{proxied.http_url}/admin/", follow_redirects=False)
    assert redirect.status_code == 301
    assert redirect.headers["location"].startswith("https://127.0.0.1")
    assert redirect.headers["location"].endswith("/admin/")

    with proxied.client() as http:
        too_large = http.post(
            "/api/auth/token",
            content=b"x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1),
            headers={"Content-Type": "application/json"},
        )
    assert too_large.status_code == 413
    assert too_large.json()["error"]["code"] == "payload_too_large"
