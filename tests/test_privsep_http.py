"""The HTTP server and the dashboard against two real Unix users and a real root daemon (issue #31).

Each test replays an attack found on them: a job's log line run as markup on root's page, sign-in
and sign-out from another site, a DNS-rebound name, a huge body read before the token, a flood of
idle connections, a spooled job's env_vars on its page, a store that cannot be written while
/healthz says ok, and the queue's buttons. Dashboard attacks run in a real headless Chromium.
"""

from __future__ import annotations

import http.client
import json
import os
import resource
import select
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import LOOPBACK, ROOT, DaemonProc, Runner, wait_for
from test_users import ALICE, BOB, SYSTEM_PY, User, team, users, world  # noqa: F401
from test_web import CHROMIUM, page_as

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("useradd"),
                                reason="needs root and useradd: the tests make real Unix users")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # rebind.example resolves to 127.0.0.1, as a DNS-rebinding attacker's name would
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                                              "--host-resolver-rules=MAP rebind.example 127.0.0.1"])
        yield b
        b.close()


def evil_page(page, html: str):
    """Open a page of another site (http://evil.example/, served by the browser's router) holding `html`."""
    page.route("http://evil.example/**", lambda route: route.fulfill(status=200, content_type="text/html", body=html))
    page.goto("http://evil.example/")


def raw(port: int, head: str, host: str | None = None, timeout: float = 10.0) -> tuple[int, dict, str]:
    """(status, headers, body) of one request sent as written (any Host header, no body)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    method, path = head.split(" ", 1)
    c.putrequest(method, path, skip_host=host is not None, skip_accept_encoding=True)
    if host is not None:
        c.putheader("Host", host)
    c.endheaders()
    r = c.getresponse()
    body = r.read().decode()
    c.close()
    return r.status, dict(r.getheaders()), body


def one_line_error(body: str) -> str:
    msg = json.loads(body)["error"]
    assert "\n" not in msg and "Traceback" not in msg, msg
    return msg


def rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def all_jobs(d) -> list[dict]:
    return d.get("/jobs?limit=1000")[1]["jobs"]


# -- 1. a log line is text, never markup ----------------------------------------------------------

@needs_chromium
def test_a_log_line_never_runs_as_markup_on_roots_page(team, browser):
    d, alice, bob, home = team
    # what bob's job prints: an image whose error handler posts a retry from whoever views the log
    payload = ("<img src=x onerror=\"window.__ran=1;fetch(location.pathname+'/retry',{method:'POST',headers:"
               "{'X-Runner-CSRF':JSON.parse(document.body.getAttribute('hx-headers'))['X-Runner-CSRF']}})\">")
    out = bob.run("submit", "--", SYSTEM_PY, "-c", "import sys; print(sys.argv[1])", payload).stdout
    jid = bob.wait(out.strip().splitlines()[-1])["id"]
    # and one whose command (its name in the queue) is markup too
    named = bob.wait(bob.run("submit", "--", "/bin/sh", "-c", 'echo "$0"', "<img src=x onerror=window.__ran=2>").stdout.strip().splitlines()[-1])
    assert "<img" in named["name"]
    before = len(all_jobs(d))
    page = page_as(browser, d, Runner(home).token())  # root, signed in
    assert "signed in as root" in page.inner_text("#who")
    posts = []
    page.on("request", lambda r: posts.append(r.url) if r.method != "GET" else None)
    page.goto(d.url + f"/ui/jobs/{jid}")
    wait_for(lambda: "(loading" not in page.inner_text("#log"), 15, what="the log in its pane")
    page.goto(d.url + "/ui/")
    page.wait_for_timeout(3500)  # the queue refreshes itself (every 3 s): its rows swapped in too
    page.goto(d.url + f"/ui/jobs/{jid}")
    wait_for(lambda: "(loading" not in page.inner_text("#log"), 15, what="the log in its pane")
    page.wait_for_timeout(2500)  # a refresh of the pane, and time for an image's error handler, were it markup
    assert page.evaluate("window.__ran") is None and posts == []  # no script ran, nothing was posted
    assert page.locator("#log img").count() == 0 and page.locator("main img").count() == 0
    assert payload in page.inner_text("#log")  # shown as the text it is
    assert len(all_jobs(d)) == before  # no retry queued, as root or anyone
    assert d.proc.poll() is None


# -- 2. sign-in, sign-out, next= and Host: only this site ----------------------------------------------

@needs_chromium
def test_no_other_site_signs_anyone_in_or_out(team, browser):
    d, alice, bob, home = team
    bob_token, alice_token = bob.run("token").stdout.strip(), alice.run("token").stdout.strip()

    # another site posts bob's token to the sign-in form in alice's browser (she would act as bob)
    victim = page_as(browser, d)
    evil_page(victim, f'<form id=f method=post action="{d.url}/ui/login"><input name=token value="{bob_token}"></form>'
                      "<script>f.submit()</script>")
    victim.wait_for_url(lambda u: u.startswith(d.url))
    assert not [c for c in victim.context.cookies() if c["name"] == "runner_session"], "signed in by another site"
    assert "cross-site request refused" in victim.inner_text(".error")

    # another site opens bob's own sign-in link in her browser
    link = bob.run("web-login").stdout.strip()
    victim = page_as(browser, d)
    evil_page(victim, f"<script>location.href = {json.dumps(link)}</script>")
    victim.wait_for_url(lambda u: u.startswith(d.url))
    assert not [c for c in victim.context.cookies() if c["name"] == "runner_session"], "signed in by another site"
    assert "Sec-Fetch-Site: cross-site" in victim.inner_text(".error")
    opened = page_as(browser, d)
    opened.goto(link)  # the same link, pasted into the address bar by bob: it works (it was not spent)
    assert "signed in as rn_bob" in opened.inner_text("#who")

    # another site signs alice out
    page = page_as(browser, d, alice_token)
    evil_page(page, f'<form id=f method=post action="{d.url}/ui/logout"></form><script>f.submit()</script>')
    page.wait_for_url(lambda u: u.startswith(d.url))
    page.goto(d.url + "/ui/")
    assert "signed in as rn_alice" in page.inner_text("#who"), "signed out by another site"

    # next= goes to a path of this site only
    for nxt, lands in [("//evil.example/x", "/ui/"), ("https://evil.example/", "/ui/"), ("/\\evil.example", "/ui/"),
                       ("javascript:alert(1)", "/ui/"), ("/ui/models", "/ui/models")]:
        p = page_as(browser, d)
        p.goto(d.url + "/ui/login?next=" + urllib.parse.quote(nxt, safe=""))
        p.fill("input[name=token]", alice_token)
        p.click("form[action='/ui/login'] button")
        p.wait_for_load_state()
        assert p.url == d.url + lands, (nxt, p.url)

    # a DNS-rebound name reaches the daemon's address but not its pages
    p = page_as(browser, d)
    r = p.goto(f"http://rebind.example:{d.port}/ui/")
    assert r.status == 421 and "rebind.example" in p.inner_text("body")
    assert p.goto(f"http://localhost:{d.port}/ui/").status == 200
    for host, status in [("evil.example", 421), (f"rebind.example:{d.port}", 421), (f"127.0.0.1:{d.port}", 200),
                         (f"localhost:{d.port}", 200), (f"[::1]:{d.port}", 200)]:
        code, _h, body = raw(d.port, "GET /jobs", host)
        assert code == status, (host, body)
        if status == 421:
            assert one_line_error(body).startswith("Host: ")
    assert d.proc.poll() is None


# -- 3. a huge body: the token first, then a cap ------------------------------------------------------

def _post_raw(port: int, headers: dict, chunks=None, max_send: int = 0, timeout: float = 10.0) -> tuple[int | None, str, int]:
    """POST /jobs with `headers`; with chunks, send them (chunked) until the server answers or
    max_send bytes are out. (status or None, body, bytes sent)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    head = "POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    s.sendall(head.encode())
    sent, reply = 0, b""
    try:
        while chunks is not None and sent < max_send:
            if select.select([s], [], [], 0)[0]:
                break  # the server answered: stop sending
            chunk = next(chunks)
            s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    try:
        while b"\r\n\r\n" not in reply or len(reply) < reply.index(b"\r\n\r\n") + 4 + int(
                (reply.split(b"content-length: ")[1:] or [b"0"])[0].split(b"\r\n")[0]):
            data = s.recv(65536)
            if not data:
                break
            reply += data
    except (socket.timeout, ConnectionResetError):
        pass
    s.close()
    if not reply:
        return None, "", sent
    return int(reply.split(b" ", 2)[1]), reply.partition(b"\r\n\r\n")[2].decode(errors="replace"), sent


def test_a_huge_post_is_refused_before_it_is_read(team):
    d, alice, bob, home = team
    token = bob.run("token").stdout.strip()
    pid = d.proc.pid
    before = rss_kb(pid)
    t0 = time.time()  # a body within the cap, announced but never sent: the token is checked first
    status, body, _ = _post_raw(d.port, {"Content-Length": 900_000, "Content-Type": "application/json"})
    assert status == 401 and "token" in one_line_error(body) and time.time() - t0 < 5
    status, body, _ = _post_raw(d.port, {"Content-Length": 900_000, "Content-Type": "application/json",
                                         "Authorization": "Bearer rn_not-a-token"})
    assert status == 401 and "unknown token" in one_line_error(body)
    for auth in ({}, {"Authorization": f"Bearer {token}"}):  # 200 MB announced: refused before a byte is read
        status, body, _ = _post_raw(d.port, {"Content-Length": 200_000_000, "Content-Type": "application/json", **auth})
        assert status == 413 and one_line_error(body).startswith("request body: larger than 1048576 bytes")

    def flood():
        yield b'{"command": ["true"], "name": "'
        while True:
            yield b"x" * 65536

    status, body, sent = _post_raw(d.port, {"Transfer-Encoding": "chunked", "Content-Type": "application/json",
                                            "Authorization": f"Bearer {token}"}, flood(), max_send=200_000_000, timeout=30)
    assert status == 413 and one_line_error(body).startswith("request body: larger than"), (status, body)
    assert sent < 64 << 20  # cut off near the cap, not read to the end
    grew = rss_kb(pid) - before
    assert grew < 32 * 1024, f"the daemon grew by {grew // 1024} MB"
    # a job of the right size still goes in, as bob
    status, posted = d.post("/jobs", token, {"command": [SYSTEM_PY, str(bob.world / "jobs.py"), "whoami"]})
    assert status == 201 and bob.wait(posted["id"])["state"] == "succeeded" and bob.show(posted["id"])["user"] == BOB
    assert d.proc.poll() is None


# -- 4. a flood of idle connections -----------------------------------------------------------------

def test_a_thousand_idle_connections_leave_the_daemon_serving(team):
    d, alice, bob, home = team
    pid = d.proc.pid
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (1024, 1024))  # systemd's default for a service
    socks = []
    deadline = time.time() + 60
    try:
        while len(socks) < 1100 and time.time() < deadline:
            socks.append(socket.create_connection(("127.0.0.1", d.port), timeout=5))
        assert len(socks) == 1100
        time.sleep(1)
        assert len(os.listdir(f"/proc/{pid}/fd")) < 1000  # never near its limit
        t0 = time.time()
        status, body = d.get("/healthz")
        assert status == 200 and body["ok"] and time.time() - t0 < 5
        jid = alice.job("whoami")
        assert alice.wait(jid)["state"] == "succeeded"
        assert d.get("/healthz")[0] == 200
    finally:
        for s in socks:
            s.close()
    # a connection that never completes its request head is closed by the server
    s = socket.create_connection(("127.0.0.1", d.port), timeout=30)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    t0 = time.time()
    assert s.recv(1) == b"" and time.time() - t0 < 20
    s.close()
    assert d.proc.poll() is None


def test_requests_whose_bodies_never_come_neither_lock_others_out_nor_stay(world, users):
    """bob, with his own valid token, opens more POSTs than the server takes, each with its head and
    the first byte of a long body: alice's requests are still answered at once, and each stalled
    request is closed once its body is late (found by a hostile teammate: everyone was locked out)."""
    from test_users import team_home

    with team_home(world, users, "[server]\nmax_connections = 40\nbody_seconds = 6\n") as (d, alice, bob, home):
        token, mine = bob.run("token").stdout.strip(), alice.run("token").stdout.strip()
        head = (f"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1:{d.port}\r\nAuthorization: Bearer {token}\r\n"
                "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{").encode()
        socks = []
        try:
            for _ in range(60):
                s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
                s.sendall(head)
                socks.append(s)
            time.sleep(1)
            for _ in range(5):  # a new request displaces the longest-stalled one, every time
                t0 = time.time()
                status, body = d.get("/jobs?limit=1", token=mine)
                assert status == 200 and time.time() - t0 < 5, (status, body)
            t0 = time.time()
            alive = [s for s in socks if s.fileno() >= 0]
            for s in alive:  # each is closed by the server by body_seconds after its head
                s.settimeout(15)
                try:
                    assert s.recv(1) in (b"", b"H")  # closed (or answered, then closed)
                except (ConnectionResetError, socket.timeout) as e:
                    assert isinstance(e, ConnectionResetError), "a stalled request stayed open"
            assert time.time() - t0 < 15
        finally:
            for s in socks:
                s.close()
        assert d.get("/healthz")[0] == 200 and d.proc.poll() is None


_FLOOD = """
import json, sys, threading, time, urllib.error, urllib.request
port, n = int(sys.argv[1]), int(sys.argv[2])
out = []
def one(i):
    t0 = time.time()
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/jobs?limit=1000&offset={i}", timeout=120).read()
        out.append((200, time.time()))
    except urllib.error.HTTPError as e:
        out.append((e.code, time.time()))
ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
for t in ts:
    t.start()
    time.sleep(0.01)
for t in ts:
    t.join()
print(json.dumps(out))
"""


def test_a_teammates_flood_of_long_reads_does_not_hold_anothers(team):
    """bob keeps 20 long reads of the queue waiting at once (pages of 1,000 jobs with 300 metric
    names each, no token: reads on loopback need none): alice's own read of the queue is made right
    after the one of his in the making, not after all of his (first come first served, it waited for
    every one); the reads past 16 of his waiting are refused (429). The daemon tells them apart by
    the uid owning each loopback socket."""
    from runner.store import Store

    d, alice, bob, home = team
    store = Store(home / "runner.db")
    for i in range(500):  # wide jobs, as any teammate can make (a table of per-class metrics)
        store.insert_job({"id": f"wide{i:04d}", "name": "wide", "user": BOB, "uid": bob.uid, "kind": "command",
                          "spec": {"command": ["true"]}, "gpus": [], "after": [], "state": "succeeded"})
        store.add_metrics(f"wide{i:04d}", [(f"class_{k:04d}/ap", 0.5, 1, 1) for k in range(300)])
    store.close()
    read = "import time, urllib.request; t0 = time.time(); urllib.request.urlopen('%s', timeout=120).read(); print(time.time() - t0)"
    one = float(bob.python(read % f"{d.url}/jobs?limit=1000&offset=100"))  # 400 jobs of 300 names
    flood = subprocess.Popen([SYSTEM_PY, "-c", _FLOOD, str(d.port), "20"], stdout=subprocess.PIPE, text=True, user=bob.uid,
                             group=bob.pw.pw_gid, extra_groups=[], env={"PATH": "/usr/bin:/bin"}, cwd="/")
    time.sleep(1.0)  # his reads are waiting
    asked = time.time()
    took = float(alice.python(read % f"{d.url}/jobs?limit=3"))
    got = json.loads(flood.communicate(timeout=300)[0])
    codes = sorted(c for c, _ in got)
    assert codes.count(429) >= 2 and set(codes) == {200, 429}, codes
    served_before = sum(1 for c, at in got if c == 200 and at < asked + took)
    assert codes.count(200) - served_before >= 8, f"alice's read came after {served_before} of bob's"
    assert took < max(3 * one, 1.5), f"alice waited {took:.2f}s; one of bob's reads takes {one:.2f}s"
    assert d.get("/healthz")[0] == 200


def test_answers_a_teammate_never_reads_neither_fill_memory_nor_lock_others_out(world, users):
    """bob asks a 5 MB page of the queue on 60 connections at once and reads none of it (found by a
    hostile pass: 1,000 such connections held 8 GB of the daemon's memory and every slot of the
    server, /healthz's too). Answers held for clients that do not read stay within stalled_mb, a
    new connection displaces the one stalled longest, and one that reads nothing for write_seconds
    is closed: alice is answered at once, the daemon's memory stays put."""
    from runner.store import Store
    from test_users import team_home

    with team_home(world, users, "[server]\nmax_connections = 40\nwrite_seconds = 6\nstalled_mb = 16\n") as (d, alice, bob, home):
        store = Store(home / "runner.db")
        for i in range(500):
            store.insert_job({"id": f"wide{i:04d}", "name": "wide", "user": BOB, "uid": bob.uid, "kind": "command",
                              "spec": {"command": ["true"]}, "gpus": [], "after": [], "state": "succeeded"})
            store.add_metrics(f"wide{i:04d}", [(f"class_{k:04d}/ap", 0.5, 1, 1) for k in range(300)])
        store.close()
        size = len(urllib.request.urlopen(f"{d.url}/jobs?limit=1000", timeout=60).read())
        assert size > 3_000_000, size
        before = rss_kb(d.proc.pid)
        held = []
        try:
            for _ in range(60):  # (as root here: a client's uid changes nothing of the server's bounds)
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.connect(("127.0.0.1", d.port))
                s.sendall(f"GET /jobs?limit=1000 HTTP/1.1\r\nHost: 127.0.0.1:{d.port}\r\n\r\n".encode())
                held.append(s)
                time.sleep(0.02)
            time.sleep(2)
            peak = rss_kb(d.proc.pid)
            for _ in range(5):
                t0 = time.time()
                status, body = d.get("/healthz")
                assert status == 200 and time.time() - t0 < 5
                out = alice.python(f"import urllib.request; print(len(urllib.request.urlopen('{d.url}/jobs?limit=1', timeout=30).read()))")
                assert int(out) > 0, out
            assert (peak - before) < 80_000, f"the daemon grew {(peak - before) // 1024} MB holding unread answers"
            t0 = time.time()
            gone = 0
            for s in held:  # each is closed by the server: displaced, or write_seconds after its answer stalled
                s.settimeout(max(1.0, 25 - (time.time() - t0)))
                try:
                    while s.recv(1 << 20):
                        pass
                    gone += 1
                except ConnectionResetError:
                    gone += 1
                except socket.timeout:
                    pass
            assert gone == len(held), f"{len(held) - gone} of bob's stalled connections stayed open"
        finally:
            for s in held:
                s.close()
        assert d.get("/healthz")[0] == 200 and d.proc.poll() is None


def test_the_daemon_raises_its_open_files_limit_to_the_hard_one(world):
    home = Path(tempfile.mkdtemp(prefix="state-", dir=world))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # as systemd starts a service without LimitNOFILE=
    try:
        d = DaemonProc(home, {**os.environ, "RUNNER_HOME": str(home), "PYTHONPATH": str(ROOT)}).start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        assert resource.prlimit(d.proc.pid, resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        d.stop()
        shutil.rmtree(home, ignore_errors=True)
    unit = (ROOT / "systemd" / "runner.service").read_text()
    assert "\nLimitNOFILE=65536\n" in unit


# -- 5. a job still in the spool: no env_vars values, no "sign in as her" to its owner ------------------

def test_a_spooled_jobs_page_shows_no_secret(team):
    d, alice, bob, home = team
    f = Path(alice.pw.pw_dir) / "secret-job.yaml"
    f.write_text(f"command: [{SYSTEM_PY}, {alice.world / 'jobs.py'}, sleep, '30']\nenv_vars: {{API_KEY: hunter2-of-alice}}\n")
    os.chown(f, alice.uid, -1)
    alice_token, bob_token = alice.run("token").stdout.strip(), bob.run("token").stdout.strip()
    # Hold the daemon's intake, as a flood of the spool holds it: a writer on the store makes it
    # wait inside the first file it takes (bob's) for up to its busy timeout (10 s).
    hold = sqlite3.connect(home / "runner.db", isolation_level=None, timeout=10)
    hold.execute("BEGIN IMMEDIATE")
    try:
        blocker = bob.run("submit", "--", "true").stdout.strip().splitlines()[-1]
        wait_for(lambda: not list((home / "spool").glob(f"*{blocker}*")), 5, what="bob's file taken in")
        jid = alice.run("submit", f).stdout.strip().splitlines()[-1]
        assert list((home / "spool").glob(f"*{jid}*.job.json")), "her job is still in the spool"
        pages = {}
        for who, token in (("nobody", None), (BOB, bob_token), (ALICE, alice_token)):
            req = urllib.request.Request(d.url + f"/ui/jobs/{jid}", headers={"Authorization": f"Bearer {token}"} if token else {})
            with LOOPBACK.open(req, timeout=5) as r:
                pages[who] = r.read().decode()
        still_spooled = list((home / "spool").glob(f"*{jid}*.job.json"))
    finally:
        hold.execute("ROLLBACK")
        hold.close()
    assert still_spooled, "the pages were read while the job was in the spool"
    for who, html in pages.items():
        assert "API_KEY" in html and "hunter2" not in html, who
        assert "&lt;hidden&gt;" in html
        assert "sign in as" not in html, who  # there is no log yet, for anyone
    assert 'id="cancel"' in pages[ALICE] and 'id="cancel"' not in pages[BOB] and 'id="cancel"' not in pages["nobody"]
    # taken in now (between the spool and the store a moment passes where `show` finds it nowhere)
    wait_for(lambda: alice.run("show", jid, "--json", check=False).returncode == 0, 30, 0.2,
             f"{jid} taken in (set aside: {[p.name for p in (home / 'spool' / 'quarantine').glob('*.reason')]})")
    job = alice.wait(jid, "running", timeout=60)
    assert job["spec"]["env_vars"] == {"API_KEY": "<hidden>"}
    alice.run("cancel", jid)
    assert d.proc.poll() is None


# -- 6. /healthz fails when the store cannot be written ----------------------------------------------

@pytest.fixture
def small_disk(world, users):
    """A root daemon whose home is on a 48 MB tmpfs of its own, with alice and bob."""
    home = Path(tempfile.mkdtemp(prefix="state-tmpfs-", dir=world))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m,mode=0755", "tmpfs", str(home)], check=True)
    d = None
    try:
        (home / "config.toml").write_text("[jobs]\nmin_free_mb = 1\n")  # jobs start on so small a disk
        os.chmod(home / "config.toml", 0o644)
        d = DaemonProc(home, {**os.environ, "RUNNER_HOME": str(home), "PYTHONPATH": str(ROOT)}).start()
        yield d, User(users[ALICE], world, home), User(users[BOB], world, home), home
    finally:
        if d:
            d.kill(15)
        subprocess.run(["umount", "-l", str(home)], check=False)
        shutil.rmtree(home, ignore_errors=True)


def test_healthz_fails_while_the_disk_is_full(small_disk):
    d, alice, bob, home = small_disk
    assert alice.wait(alice.job("whoami"))["state"] == "succeeded"
    assert d.get("/healthz")[0] == 200
    fill = home / "fill"
    with open(fill, "wb") as f:  # the disk fills up (someone's checkpoints)
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass
    got = wait_for(lambda: (lambda r: r if r[0] == 503 else None)(d.get("/healthz")), 15, 0.5, "/healthz to fail")
    msg = got[1]["error"]
    assert "cannot be written" in msg and "No space left on device" in msg and "\n" not in msg
    assert bob.run("submit", "--", "true", check=False).returncode != 0  # what every submitter meets meanwhile
    fill.unlink()
    wait_for(lambda: d.get("/healthz")[0] == 200, 15, 0.5, "/healthz to recover")
    assert alice.wait(alice.job("whoami"))["state"] == "succeeded"
    assert d.proc.poll() is None


def test_healthz_fails_while_the_store_is_read_only(team):
    d, alice, bob, home = team
    if not shutil.which("chattr"):
        pytest.skip("needs chattr (e2fsprogs) to make the store read-only")
    assert alice.wait(alice.job("whoami"))["state"] == "succeeded"
    assert d.get("/healthz")[0] == 200
    frozen = [home / "runner.db-wal", home / "runner.db", home]  # the store and its folder, read-only (not -shm: it is mapped)
    if subprocess.run(["chattr", "+i", *map(str, frozen)], capture_output=True).returncode != 0:
        subprocess.run(["chattr", "-i", *map(str, frozen)], capture_output=True)
        pytest.skip(f"{home}'s file system has no immutable flag")
    try:
        got = wait_for(lambda: (lambda r: r if r[0] == 503 else None)(d.get("/healthz")), 15, 0.5, "/healthz to fail")
        assert "cannot be written" in got[1]["error"] and "\n" not in got[1]["error"]
        jid = bob.run("submit", "--", "true").stdout.strip().splitlines()[-1]  # what every submitter meets meanwhile:
        time.sleep(2)
        assert bob.show(jid)["state"] == "submitted"  # his job waits in the spool, not taken
        assert d.get("/healthz")[0] == 503
    finally:
        subprocess.run(["chattr", "-i", *map(str, frozen)], check=True)
    wait_for(lambda: d.get("/healthz")[0] == 200, 15, 0.5, "/healthz to recover")
    assert bob.wait(jid)["state"] == "succeeded"
    assert alice.wait(alice.job("whoami"))["state"] == "succeeded"
    assert d.proc.poll() is None


# -- 7. the queue's buttons: her own jobs only ---------------------------------------------------------

@needs_chromium
def test_the_queue_shows_buttons_on_ones_own_jobs_only(team, browser):
    d, alice, bob, home = team
    running = alice.wait(alice.job("sleep", "60"), "running")["id"]
    ended = alice.wait(alice.job("whoami"))["id"]
    pages = {}
    for who, mine in ((alice, True), (bob, False)):
        page = pages[who.name] = page_as(browser, d, who.run("token").stdout.strip())
        page.goto(d.url + "/ui/")
        assert f"signed in as {who.name}" in page.inner_text("#who")
        assert page.locator(f"tr[data-job='{running}'] button[title='cancel {running}']").count() == (1 if mine else 0), who.name
        assert page.locator(f"tr[data-job='{ended}'] button[title='retry {ended}']").count() == (1 if mine else 0), who.name
    pages[ALICE].once("dialog", lambda dlg: dlg.accept())  # the button asks first
    pages[ALICE].click(f"tr[data-job='{running}'] button[title='cancel {running}']")  # her button works
    assert alice.wait(running, timeout=30)["state"] == "cancelled"
    assert d.proc.poll() is None
