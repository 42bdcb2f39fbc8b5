"""The chat page's HTML and headers, without a browser: a strict Content-Security-Policy,
no inline script or style, every asset one of our own static files, and the vendored
libraries' versions as their README says."""

import re
from pathlib import Path

from django.contrib.staticfiles import finders

from config.csp import CHAT_PAGE_POLICY


def directives(header: str) -> dict[str, str]:
    return dict(part.strip().split(" ", 1) for part in header.split(";"))


def test_the_page_is_served_with_a_strict_content_security_policy(client, db):
    response = client.get("/")
    assert response.status_code == 200
    header = response.headers["Content-Security-Policy"]
    assert header == CHAT_PAGE_POLICY
    policy = directives(header)
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self'"
    assert policy["img-src"] == "'self' data:"
    assert policy["object-src"] == "'none'"
    assert policy["base-uri"] == "'none'"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["require-trusted-types-for"] == "'script'"
    assert policy["trusted-types"] == "dompurify"
    assert "unsafe" not in header  # no 'unsafe-inline', 'unsafe-eval', 'unsafe-hashes'


def test_the_api_has_no_page_policy(auth_client):
    # The policy belongs to the page; JSON answers do not need it.
    assert "Content-Security-Policy" not in auth_client.get("/api/chat").headers


def test_the_page_has_no_inline_script_or_style_and_only_local_assets(client, db):
    html = client.get("/").content.decode()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, flags=re.S)
    assert [attrs.strip() for attrs, _ in scripts] == [
        'src="/static/chat/vendor/marked.umd.js"',
        'src="/static/chat/vendor/purify.min.js"',
        'src="/static/chat/app.js"',
    ]
    assert all(body.strip() == "" for _, body in scripts)
    assert "<style" not in html
    assert not re.search(r"\sstyle=", html)
    assert not re.search(r"\son[a-z]+=", html)  # no inline event handlers
    assert not re.search(r"https?://", html)  # no CDN, nothing absolute
    for url in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert url.startswith("/static/"), url
        assert finders.find(url.removeprefix("/static/")), f"{url} is not one of our files"


def test_the_vendored_libraries_are_the_versions_their_readme_names():
    def read(name: str) -> str:
        return Path(finders.find(f"chat/vendor/{name}")).read_text()

    readme, marked, purify = read("README.md"), read("marked.umd.js"), read("purify.min.js")
    marked_version = re.search(r"marked v(\d+\.\d+\.\d+)", marked).group(1)
    purify_version = re.search(r"DOMPurify (\d+\.\d+\.\d+)", purify).group(1)
    assert f"| {marked_version} | MIT" in readme
    assert f"| {purify_version} | MPL-2.0 or Apache-2.0" in readme
    for license_file in ("marked.LICENSE.md", "dompurify.LICENSE", "dompurify.LICENSE-MPL"):
        assert finders.find(f"chat/vendor/{license_file}")
