"""The contest client and scripts against a local server that follows ../shared/CONTEST.md."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from simcaptcha.contest import ContestClient, ContestError, check_solutions


SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def run_script(name, *args):
    proc = subprocess.run([sys.executable, str(SCRIPTS / name), *map(str, args)], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def body(pairs):
    return {"solutions": [{"name": n, "solution": s} for n, s in pairs]}


def test_check_solutions():
    assert check_solutions(body([("a", "ab12")])) == []
    problems = check_solutions(body([("a", "AB12"), ("a", "ab1"), ("b", "ab12")]))
    assert len(problems) == 3
    assert check_solutions(body([(str(i), "aaaa") for i in range(15_001)]))
    assert check_solutions({"nope": []})


def test_download_script(tmp_path, server):
    out = tmp_path / "dl"
    proc = run_script("download_challenges.py", "--url", server.url, "--user", "alice", "--count", 2, "-o", out)
    assert proc.returncode == 0, proc.stderr
    files = sorted(out.iterdir())
    assert [f.name for f in files] == ["challenge-0", "challenge-1"]
    assert len(json.loads(files[0].read_text())["images"]) == 20


def test_download_retries_then_keeps_good_files(tmp_path, server):
    server.fail_next = 2  # two dropped connections, then success
    client = ContestClient(server.url, "alice", retries=3, backoff=0.01)
    assert json.loads(client.challenge())["images"]
    out = tmp_path / "dl"
    out.mkdir()
    (out / "challenge-0").write_text("good file")
    proc = run_script("download_challenges.py", "--url", "http://127.0.0.1:9", "--user", "a", "--count", 1, "-o", out, "--retries", 0, "--force")
    assert proc.returncode != 0 and "cannot reach" in proc.stderr
    assert (out / "challenge-0").read_text() == "good file"  # a failed download replaced nothing


def test_submit_script_passcode_and_rejection(tmp_path, server, challenge_dir):
    answers = json.loads((challenge_dir.parent / "labels.json").read_text())
    good = tmp_path / "good.json"
    good.write_text(json.dumps(body(answers.items())))
    proc = run_script("submit.py", good, "--url", server.url, "--user", "alice")
    assert proc.returncode == 0, proc.stderr
    assert "passcode: open-sesame-42" in proc.stdout

    few = tmp_path / "few.json"
    few.write_text(json.dumps(body(list(answers.items())[:5])))
    proc = run_script("submit.py", few, "--url", server.url, "--user", "alice")
    assert proc.returncode == 1 and "Too few correct solutions" in proc.stderr


def test_submit_script_checks_before_sending(tmp_path, server):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(body([("a", "toolong"), ("a", "ab12")])))
    proc = run_script("submit.py", bad, "--url", server.url, "--user", "alice")
    assert proc.returncode == 1 and "not 4 characters" in proc.stderr and "more than once" in proc.stderr
    notjson = tmp_path / "x.json"
    notjson.write_text("{")
    proc = run_script("submit.py", notjson, "--url", server.url, "--user", "alice")
    assert proc.returncode == 1 and "not JSON" in proc.stderr


def test_submit_connection_error_and_non_json_reply(tmp_path, server):
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps(body([("a", "ab12")])))
    proc = run_script("submit.py", ok, "--url", "http://127.0.0.1:9", "--user", "a")
    assert proc.returncode == 1 and "cannot reach" in proc.stderr and "nothing was sent" in proc.stderr
    # a reply that is not JSON (a proxy's error page) is one ContestError
    client = ContestClient(server.url, "alice")
    from simcaptcha.contest import Reply

    client._once = lambda *a, **k: Reply(502, b"<html>bad gateway</html>")
    with pytest.raises(ContestError, match="not JSON"):
        client.submit(body([("a", "ab12")]))
