"""`charlstm serve` under load: requests/s and characters/s for 1, 4 and 16 concurrent clients,
through /generate and through OpenAI's /v1/completions.

The server runs as a user runs it (`charlstm serve --port 0 --quiet`, its own process, on a
loopback port); each client is a thread here with one keep-alive connection that sends
`--requests` requests of `--length` characters one after another (seed = a request number,
temperature 0.8 on both endpoints; `--stream` reads NDJSON lines or server-sent events and
also times the first character). One JSON line per endpoint and client count: requests/s,
characters/s, latency (median and 95th percentile), and the mean batch the server drew
(characters drawn / batched steps taken, read from /health): with 16 clients near 16 when
requests overlap, which is why 16 clients do not take 16 times as long. The two endpoints draw
the same samples, so their rows compare what OpenAI's request and answer shapes cost.

    python benchmarks/serve_load.py                                   # fresh lstm 2x512, 1/4/16 clients
    python benchmarks/serve_load.py --checkpoint checkpoints/RUN --stream
    python benchmarks/serve_load.py --hidden 32 --clients 1,2 --requests 2 --length 20   # seconds
    python benchmarks/serve_load.py --clients 16 --rounds 5        # the endpoints' ratio, in turns

A shared machine's speed wanders by more than the endpoints differ (16 clients on /generate
read 5.4 and 8.4 requests/s in two runs an hour apart), so with `--rounds R` the endpoints take
turns R times, in alternating order, and a closing line per client count gives each endpoint's
median requests/s and completions' over generate's: that ratio is the result.

Without --checkpoint the model is untrained (random weights of the given shape, a 65-character
vocabulary as tiny-shakespeare's): speed does not depend on what a model learned.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def fresh_checkpoint(folder: Path, cell: str, layers: int, hidden: int) -> Path:
    """A checkpoint of an untrained model, written as charlstm writes one."""
    import torch

    from charlstm.checkpoint import FORMAT_VERSION, save_atomic
    from charlstm.model import CharLSTM, ModelConfig

    chars = "".join(chr(32 + i) for i in range(64)) + "\n"
    torch.manual_seed(0)
    model = CharLSTM(ModelConfig(len(chars), cell=cell, layers=layers, hidden=hidden))
    path = folder / "fresh.pt"
    payload = {"format": FORMAT_VERSION, "model_config": model.config.to_dict(), "vocabulary": chars}
    save_atomic(payload | {"model": model.state_dict()}, path)
    return path


class Served:
    """`charlstm serve` in a child process on a free loopback port."""

    def __init__(self, checkpoint: Path, max_length: int, threads: int | None = None):
        command = [sys.executable, "-m", "charlstm", "serve", "--checkpoint", str(checkpoint), "--port", "0"]
        command += ["--quiet", "--max-length", str(max_length)] + (["--threads", str(threads)] if threads else [])
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
        line = self.process.stdout.readline()
        if not line.startswith("charlstm serve: http://"):
            self.process.kill()
            raise SystemExit(f"serve_load: the server did not start: {line!r}")
        address = line.split()[2].removeprefix("http://").rstrip("/")
        self.host, port = address.rsplit(":", 1)
        self.port = int(port)
        self.summary = line.split("(", 1)[1].rsplit(")", 1)[0]
        self.model = self.get("/v1/models")["data"][0]["id"]

    def get(self, path: str) -> dict:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        connection.request("GET", path)
        answer = json.loads(connection.getresponse().read())
        connection.close()
        return answer

    def health(self) -> dict:
        return self.get("/health")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


ENDPOINTS = ("generate", "completions")
TEMPERATURE = 0.8
"""Both endpoints draw at /generate's default temperature, so they draw the same samples."""


def request(served: Served, endpoint: str, seed: int, args: argparse.Namespace) -> tuple[str, dict]:
    """The path and body of one request of `args.length` characters."""
    if endpoint == "generate":
        body = {"prime": "\n", "length": args.length, "temperature": TEMPERATURE, "seed": seed, "stream": args.stream}
        return "/generate", body
    body = {"model": served.model, "prompt": "\n", "max_tokens": args.length, "temperature": TEMPERATURE}
    return "/v1/completions", body | {"seed": seed, "stream": args.stream}


def answer(response: http.client.HTTPResponse, endpoint: str, stream: bool, start: float) -> tuple[float | None, int]:
    """Read one answer whole: (seconds to the first character when streamed, characters drawn)."""
    if not stream:
        whole = json.loads(response.read())
        if endpoint == "generate":
            return None, sum(s["characters"] for s in whole["samples"])
        return None, whole["usage"]["completion_tokens"]
    first, characters = None, 0
    while line := response.readline():
        if endpoint == "generate":
            event = json.loads(line)
            text = event.get("text", "") if event["type"] == "text" else ""
        elif line.startswith(b"data: {"):
            text = json.loads(line[6:])["choices"][0]["text"]
        else:
            continue
        if text and first is None:
            first = time.perf_counter() - start
        characters += len(text)
    return first, characters


def client(served: Served, endpoint: str, first_seed: int, args: argparse.Namespace, results: list) -> None:
    """`args.requests` requests on one keep-alive connection: (latency, first character, characters)."""
    connection = http.client.HTTPConnection(served.host, served.port, timeout=600)
    for k in range(args.requests):
        path, body = request(served, endpoint, first_seed + k, args)
        start = time.perf_counter()
        connection.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        if response.status != 200:
            raise SystemExit(f"serve_load: {response.status} {response.read()!r}")
        first, characters = answer(response, endpoint, args.stream, start)
        results.append((time.perf_counter() - start, first, characters))
    connection.close()


def measure(served: Served, endpoint: str, clients: int, args: argparse.Namespace) -> dict:
    results: list = []
    steps_before = served.health()["steps"]
    threads = [
        threading.Thread(target=client, args=(served, endpoint, 1000 * c, args, results)) for c in range(clients)
    ]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    steps = served.health()["steps"] - steps_before
    if len(results) != clients * args.requests:
        raise SystemExit(f"serve_load: {clients * args.requests - len(results)} requests failed (see above)")
    latencies = sorted(r[0] for r in results)
    characters = sum(r[2] for r in results)
    row = {
        "benchmark": "serve_load",
        "endpoint": endpoint,
        "model": served.summary,
        "clients": clients,
        "requests": len(results),
        "length": args.length,
        "stream": args.stream,
        "seconds": round(seconds, 3),
        "requests_per_s": round(len(results) / seconds, 2),
        "chars_per_s": round(characters / seconds, 1),
        "latency_p50_s": round(statistics.median(latencies), 4),
        "latency_p95_s": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 4),
        "mean_batch": round(characters / steps, 2) if steps else None,
    }
    if args.stream:
        row["first_char_p50_s"] = round(statistics.median(r[1] for r in results if r[1] is not None), 4)
    return row


def compared(rows: list[dict], clients: int, args: argparse.Namespace) -> dict:
    """Each endpoint's median requests/s over the rounds, and completions' over generate's."""
    medians = {
        endpoint: statistics.median(r["requests_per_s"] for r in rows if r["endpoint"] == endpoint)
        for endpoint in dict.fromkeys(r["endpoint"] for r in rows)
    }
    row = {"benchmark": "serve_load_compared", "clients": clients, "rounds": args.rounds, "stream": args.stream}
    row |= {f"{endpoint}_requests_per_s": value for endpoint, value in medians.items()}
    if len(medians) == 2:
        row["completions_over_generate"] = round(medians["completions"] / medians["generate"], 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint", help="A .pt file or run folder; default: a fresh model of --cell/--layers/--hidden."
    )
    parser.add_argument("--cell", default="lstm")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--clients", default="1,4,16", help="Client counts, comma-separated.")
    parser.add_argument("--requests", type=int, default=8, help="Requests each client sends, one after another.")
    parser.add_argument("--length", type=int, default=500, help="Characters per request.")
    parser.add_argument("--stream", action="store_true", help="Ask for streams (and time the first character).")
    parser.add_argument("--endpoints", default=",".join(ENDPOINTS), help="generate, completions, or both.")
    parser.add_argument("--server-threads", type=int, default=None, help="The server's --threads.")
    parser.add_argument("--rounds", type=int, default=1, help="Turns each endpoint takes, in alternating order.")
    args = parser.parse_args()
    if not set(args.endpoints.split(",")) <= set(ENDPOINTS):
        parser.error(f"--endpoints takes {' and '.join(ENDPOINTS)}, comma-separated; got {args.endpoints!r}")
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = (
            Path(args.checkpoint)
            if args.checkpoint
            else fresh_checkpoint(Path(folder), args.cell, args.layers, args.hidden)
        )
        served = Served(checkpoint, max(args.length, 1), args.server_threads)
        try:
            endpoints = args.endpoints.split(",")
            for endpoint in endpoints:  # warm-up
                client(served, endpoint, 10**6, argparse.Namespace(**{**vars(args), "requests": 1}), [])
            for clients in (int(c) for c in args.clients.split(",")):
                rows = []
                for turn in range(args.rounds):
                    for endpoint in endpoints if turn % 2 == 0 else endpoints[::-1]:
                        rows.append(measure(served, endpoint, clients, args) | {"round": turn})
                        print(json.dumps(rows[-1]), flush=True)
                if args.rounds > 1:
                    print(json.dumps(compared(rows, clients, args)), flush=True)
        finally:
            served.stop()


if __name__ == "__main__":
    main()
