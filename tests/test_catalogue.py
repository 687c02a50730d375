"""`charlstm corpus list|get` against a local HTTP server: no test touches the network."""

import errno
import hashlib
import http.server
import json
import re
import threading
import zipfile
from functools import partial

import pytest

from charlstm import catalogue
from charlstm.errors import CharlstmError, WriteFailed
from tests.helpers import ERRNOS, REASON, FailingDisk, run_cli

TEXT = "To be, or not to be: that is the question.\n" * 50


@pytest.fixture
def server(tmp_path):
    """Serves tmp_path/www over HTTP on a free port; counts the requests."""
    www = tmp_path / "www"
    www.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}", requests
    httpd.shutdown()


@pytest.fixture
def mirror(server, tmp_path, monkeypatch):
    """A catalogue whose corpora are served locally: a plain file and a zip member."""
    www, url, requests = server
    data = TEXT.encode()
    (www / "hamlet.txt").write_bytes(data)
    with zipfile.ZipFile(www / "hamlet.zip", "w") as z:
        z.writestr("hamlet", data)
    zipped = (www / "hamlet.zip").read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    common = {"licence": "public domain", "description": "a test corpus"}
    entries = {
        "hamlet": common
        | {"url": f"{url}/hamlet.txt", "bytes": len(data), "sha256": sha, "file": "hamlet.txt", "train": "x"},
        "zipped": common
        | {
            "url": f"{url}/hamlet.zip",
            "bytes": len(zipped),
            "sha256": hashlib.sha256(zipped).hexdigest(),
            "member": "hamlet",
            "member_bytes": len(data),
            "member_sha256": sha,
            "file": "hamlet",
            "train": "x",
        },
    }
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps(entries))
    monkeypatch.setenv("CHARLSTM_CATALOGUE", str(path))
    return www, requests


def test_the_shipped_catalogue_describes_the_standard_tinyshakespeare(monkeypatch):
    monkeypatch.delenv("CHARLSTM_CATALOGUE", raising=False)
    entries = catalogue.load_catalogue()
    assert {"tinyshakespeare", "enwik8"} <= entries.keys()
    shakespeare = entries["tinyshakespeare"]
    # char-rnn's input.txt, the file every published tiny-shakespeare number was measured on.
    assert (shakespeare.file, shakespeare.bytes) == ("tinyshakespeare.txt", 1_115_394)
    assert shakespeare.sha256 == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    assert "/karpathy/char-rnn/6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e/" in shakespeare.url, "pinned to a commit"
    for e in entries.values():
        assert len(e.final_sha256) == 64 and e.url.startswith("http") and e.licence


def test_get_downloads_verifies_and_keeps_a_good_copy(mirror, tmp_path):
    _, requests = mirror
    out = tmp_path / "data"
    result = run_cli("corpus", "get", "hamlet", "--to", str(out))
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and "SHA-256 verified" in result.stdout
    assert (out / "hamlet.txt").read_text() == TEXT
    assert [p.name for p in out.iterdir()] == ["hamlet.txt"]
    again = run_cli("corpus", "get", "hamlet", "--to", str(out))
    assert again.returncode == 0 and "already have" in again.stdout
    assert len(requests) == 1


def test_get_extracts_the_member_of_an_archive(mirror, tmp_path):
    path, downloaded = catalogue.fetch(catalogue.entry("zipped"), tmp_path / "data")
    assert downloaded and path.read_text() == TEXT
    assert [p.name for p in path.parent.iterdir()] == ["hamlet"]


def test_a_corrupted_download_leaves_nothing_behind(mirror, tmp_path):
    www, _ = mirror
    (www / "hamlet.txt").write_text(TEXT.replace("question", "answer!!"))
    out = tmp_path / "data"
    result = run_cli("corpus", "get", "hamlet", "--to", str(out))
    assert result.returncode == 1
    assert result.stderr.startswith("charlstm: error: ") and "nothing was kept" in result.stderr
    assert list(out.iterdir()) == []


def test_a_different_file_of_the_same_name_is_never_overwritten(mirror, tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "hamlet.txt").write_text("my own notes")
    result = run_cli("corpus", "get", "hamlet", "--to", str(out))
    assert result.returncode == 1 and "is not the catalogue's hamlet" in result.stderr
    assert (out / "hamlet.txt").read_text() == "my own notes"


def test_unknown_names_and_unreachable_servers_are_one_line(mirror, tmp_path, monkeypatch):
    unknown = run_cli("corpus", "get", "hamlett")
    assert unknown.returncode == 1 and "known: hamlet, zipped" in unknown.stderr
    entries = json.loads(catalogue.catalogue_path().read_text())
    entries["hamlet"]["url"] = "http://127.0.0.1:9/hamlet.txt"
    catalogue.catalogue_path().write_text(json.dumps(entries))
    down = run_cli("corpus", "get", "hamlet", "--to", str(tmp_path))
    assert down.returncode == 1 and "cannot download http://127.0.0.1:9/hamlet.txt" in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1


def test_list_shows_every_entry(mirror):
    result = run_cli("corpus", "list", "--json")
    assert result.returncode == 0
    assert [e["name"] for e in json.loads(result.stdout)] == ["hamlet", "zipped"]
    table = run_cli("corpus", "list")
    assert "hamlet" in table.stdout and "public domain" in table.stdout


def test_a_fetched_corpus_is_found_where_get_left_it_and_only_if_it_is_the_right_file(mirror, tmp_path, monkeypatch):
    out = tmp_path / "data"
    assert catalogue.find_fetched("hamlet", [out]) is None
    assert run_cli("corpus", "get", "hamlet", "--to", str(out)).returncode == 0
    assert catalogue.find_fetched("hamlet", [tmp_path / "elsewhere", out]) == out / "hamlet.txt"
    assert run_cli("corpus", "get", "zipped", "--to", str(out)).returncode == 0
    assert catalogue.find_fetched("zipped", [out]) == out / "hamlet"
    monkeypatch.chdir(out)
    assert catalogue.find_fetched("hamlet") == catalogue.DEFAULT_FOLDER / "hamlet.txt", "get's default --to"
    (out / "hamlet.txt").write_text(TEXT.replace("question", "answer!!"))
    assert catalogue.find_fetched("hamlet", [out]) is None, "same name and size, other text"


@pytest.mark.parametrize(
    "name, file, failing",
    [
        ("hamlet", "hamlet.txt", ".hamlet.txt.download"),
        ("zipped", "hamlet", ".hamlet.download"),
        ("zipped", "hamlet", ".hamlet.extract"),
    ],
)
@pytest.mark.parametrize("code", ERRNOS)
def test_a_corpus_that_cannot_be_written_is_worded_as_every_other_write(
    mirror, tmp_path, monkeypatch, name, file, failing, code
):
    """The download, or the member extracted from it, fails as a disk would."""
    out, item = tmp_path / "data", catalogue.entry(name)
    FailingDisk(monkeypatch, failing, code, partial=10)
    with pytest.raises(WriteFailed) as failure:
        catalogue.fetch(item, out)
    assert str(failure.value).startswith(f"could not write {out / file}: {REASON[code]}")
    assert str(failure.value).endswith(f"; no partial {file} was left")
    if code == errno.ENOSPC:
        needed = len(TEXT) + (item.bytes if item.member else 0)  # a zip and its member at once
        assert failure.value.needed == needed and "needs about" in str(failure.value)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "is not a JSON object of corpora by name, each an object with description, url, bytes"),
        ('{"x": 1}', "is not a JSON object of corpora by name"),
        ('{"x": {"url": "u"}}', "entry 'x' lacks description, bytes, sha256, file, licence, train"),
        ('{"x": ', "is not JSON"),
    ],
)
def test_a_catalogue_of_the_wrong_shape_says_what_shape_it_must_have(tmp_path, monkeypatch, text, message):
    """A list used to come out as Python's own words: 'list' object has no attribute 'items'."""
    path = tmp_path / "mirror.json"
    path.write_text(text)
    monkeypatch.setenv("CHARLSTM_CATALOGUE", str(path))
    with pytest.raises(CharlstmError, match=re.escape(message)):
        catalogue.load_catalogue()
