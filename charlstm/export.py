"""`charlstm export`: hand a trained model to anyone, as ONNX or as one HTML page.

Every check a user can fail runs before the checkpoint is read or anything is written:
an output that exists (kept unless `force`), a missing folder, the same file named twice,
ONNX export without its packages. Each file is written whole or not at all
(`disk.write_user_file`), so a failed export never leaves half a file, nor damages the
file it was asked to replace.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from charlstm import checkpoint as checkpoints
from charlstm import disk
from charlstm.errors import CharlstmError, SettingError, named
from charlstm.export_html import html_page
from charlstm.export_onnx import onnx_bytes, require_onnx, state_names


@dataclass(frozen=True)
class Written:
    """One file an export wrote, for the command to report."""

    path: Path
    bytes: int
    what: str


def export(checkpoint: str | Path | None, onnx: Path | None, html: Path | None, force: bool = False) -> list[Written]:
    """Write the model of `checkpoint` (a .pt file, a run folder, or None for the newest run)
    as ONNX to `onnx` and/or as a sampling page to `html`."""
    outputs = [path for path in (onnx, html) if path is not None]
    if not outputs:
        raise SettingError("onnx", f"nothing to export: give {named('onnx')} FILE, {named('html')} FILE or both")
    if onnx is not None and html is not None and onnx.resolve() == html.resolve():
        raise SettingError("html", f"{named('onnx')} and {named('html')} both name {onnx}; give each its own file")
    for path in outputs:
        check_output(path, force)
    if onnx is not None:
        require_onnx()
    source = checkpoints.resolve(checkpoint)
    model, vocabulary, _ = checkpoints.load_model(source)
    shape = f"{model.config.cell} {model.config.layers}x{model.config.hidden}"
    written = []
    if onnx is not None:
        data = onnx_bytes(model, vocabulary)
        write(onnx, data)
        inputs = ", ".join(("id", *state_names(model)))
        written.append(Written(onnx, len(data), f"ONNX, {shape}, one sampling step (inputs: {inputs})"))
    if html is not None:
        data = html_page(model, vocabulary, f"charlstm {shape}: {source}").encode("utf-8")
        write(html, data)
        written.append(Written(html, len(data), f"sampling page, {shape}; open it in a browser, no network needed"))
    return written


def write(path: Path, data: bytes) -> None:
    """Write the whole file or nothing (a failure is `WriteFailed`, the file it would replace
    kept), with the mode of any new file of the user's (`disk.write_user_file`)."""
    disk.write_user_file(path, data)


def check_output(path: Path, force: bool) -> None:
    """Refuse, in one line, an output that cannot or should not be written."""
    disk.check_writable_path(path)
    if path.exists() and not force:
        raise CharlstmError(f"{path} exists; add --force to replace it")
