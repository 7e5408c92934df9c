#!/usr/bin/env python3
"""Issue 17's chat benchmarks, the client side (run by scripts/bench-ml.sh; not part of CI).

Stdlib only, except the `llama` and `llama-rss` modes, which import llama_cpp
(llama-cpp-python). Every side gets the same prompt text: the user message in SmolLM2's ChatML
template without a system message, which is what the candle plugin builds for
`messages:[{role:user}]` (SmolLM2's own chat template would add a default system message, so
llama.cpp's sides get the templated text as a raw prompt instead of applying their template).

  prompts OUT                      write OUT/short.txt and OUT/long.txt (the user messages)
  llama GGUF PROMPT ROUNDS MAXTOK THREADS TAG
                                   llama-cpp-python in process: TTFT and generation tokens/s,
                                   llm.reset() before each round (no prompt reuse)
  http KIND BASE KEY PROMPT ROUNDS MAXTOK TAG
                                   streamed requests: KIND bkg (/v1/chat/completions) or
                                   llama-server (/v1/completions, cache_prompt false)
  parallel KIND BASE KEY CLIENTS ROUNDS MAXTOK LABEL
                                   CLIENTS threads, each posting its own prompt at once, ROUNDS
                                   timed rounds after one warm-up round
  bkg-rss BASE KEY PID             host RSS: idle (candle running, no model), then the chat
                                   model loaded and 16 tokens generated
  server-rss BASE PID              llama-server RSS after a 16-token generation
  llama-rss GGUF THREADS           llama-cpp-python's process RSS: bare, after import, after
                                   the load and a 16-token generation
  summary FILE                     RESULT lines from the JSON lines in FILE
"""
import http.client
import json
import os
import statistics
import sys
import threading
import time
import urllib.parse

CHATML = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
CHAT_MODEL = "SmolLM2-135M-Instruct"

# The 20-token prompt (21 tokens with the template in SmolLM2's tokenizer) and the 4 prompts of
# the concurrent clients (stories, so that each generates its 128 tokens).
SHORT = "Write a short story about a robot who learns to paint."
STORIES = [
    SHORT,
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Write a short story about a cat who becomes the mayor of a small town.",
    "Write a short story about two friends who build a boat to cross a lake.",
]
# The ~500-token prompt: real prose nobody here wrote, from CPython's standard library: the
# explanation by Francois Pinard in Lib/heapq.py (`heapq.__about__`), from "In the tree above"
# on, its first LONG_WORDS words.
LONG_WORDS = 374


def long_prompt():
    import heapq

    text = heapq.__about__
    start = text.index("In the tree above")
    paragraphs = [" ".join(p.split()) for p in text[start:].split("\n\n") if p.strip()]
    words, out = 0, []
    for p in paragraphs:
        w = p.split()
        if words + len(w) > LONG_WORDS:
            out.append(" ".join(w[: LONG_WORDS - words]))
            break
        out.append(p)
        words += len(w)
    return "Summarize the following text in one paragraph.\n\n" + "\n\n".join(out)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit(f"no VmRSS for pid {pid}")


class Client:
    """Requests to BASE (bkg with its admin key, or llama-server), a new connection for each
    (llama-server closes a keep-alive connection after some answers; both sides alike)."""

    def __init__(self, base, key=None):
        self.url = urllib.parse.urlparse(base)
        self.conn = None
        self.headers = {"Content-Type": "application/json"}
        if key:
            self.headers["Authorization"] = f"Bearer {key}"

    def connect(self):
        if self.conn is not None:
            self.conn.close()
        self.conn = http.client.HTTPConnection(self.url.hostname, self.url.port, timeout=900)

    def post(self, path, body):
        self.connect()
        self.conn.request("POST", path, json.dumps(body), self.headers)
        r = self.conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise SystemExit(f"POST {path}: {r.status} {data[:500]!r}")
        return json.loads(data)

    def stream(self, path, body):
        """Yield each server-sent event's JSON payload until [DONE]."""
        self.connect()
        self.conn.request("POST", path, json.dumps(body), self.headers)
        r = self.conn.getresponse()
        if r.status != 200:
            raise SystemExit(f"POST {path}: {r.status} {r.read()[:500]!r}")
        for line in r:
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                break
            yield json.loads(payload)
        r.read()


def request(kind, message, max_tokens, stream=False):
    """(path, body) of one greedy generation of `message` on bkg or llama-server."""
    if kind == "bkg":
        body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": message}]}
        path = "/v1/chat/completions"
    elif kind == "llama-server":
        # cache_prompt false: every request processes its whole prompt (no reuse of a slot's
        # previous prompt), as the bkg side does.
        body = {"prompt": CHATML.format(message), "cache_prompt": False}
        path = "/v1/completions"
    else:
        raise SystemExit(f"unknown server kind {kind!r} (bkg or llama-server)")
    body.update({"temperature": 0, "max_tokens": max_tokens, "stream": stream})
    return path, body


def content(kind, chunk):
    if not chunk.get("choices"):
        return ""
    c = chunk["choices"][0]
    if kind == "bkg":
        return (c.get("delta") or {}).get("content") or ""
    return c.get("text") or ""


def mode_prompts(out):
    os.makedirs(out, exist_ok=True)
    for name, text in (("short", SHORT), ("long", long_prompt())):
        with open(f"{out}/{name}.txt", "w", encoding="utf-8") as f:
            f.write(text)


def mode_llama(gguf, prompt_file, rounds, max_tokens, threads, tag):
    from llama_cpp import Llama

    message = open(prompt_file, encoding="utf-8").read()
    prompt = CHATML.format(message)
    llm = Llama(model_path=gguf, n_threads=threads, n_threads_batch=threads, n_ctx=2048,
                verbose=False)
    prompt_tokens = len(llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True))
    llm.create_completion(prompt, temperature=0, max_tokens=max_tokens)  # warm-up
    ttft, tps, tokens = [], [], []
    for _ in range(rounds):
        llm.reset()  # no reuse of the previous round's prompt in the KV cache
        t = time.perf_counter()
        first, n = None, 0
        for chunk in llm.create_completion(prompt, temperature=0, max_tokens=max_tokens,
                                           stream=True):
            if chunk["choices"][0]["text"]:  # one chunk per token; the last one has no text
                n += 1
                first = first or time.perf_counter()
        end = time.perf_counter()
        ttft.append(first - t)
        tps.append((n - 1) / (end - first) if n > 1 else 0.0)
        tokens.append(n)
    print(json.dumps({"side": "llama.cpp", "prompt": tag, "prompt_tokens": prompt_tokens,
                      "ttft_s": ttft, "tokens_per_s": tps, "tokens": tokens}))


def mode_http(kind, base, key, prompt_file, rounds, max_tokens, tag):
    message = open(prompt_file, encoding="utf-8").read()
    c = Client(base, key)
    path, body = request(kind, message, max_tokens)
    warm = c.post(path, body)  # warm-up (and bkg's first load of the model)
    prompt_tokens = warm["usage"]["prompt_tokens"]
    path, body = request(kind, message, max_tokens, stream=True)
    ttft, tps, tokens = [], [], []
    for _ in range(rounds):
        t = time.perf_counter()
        first, last, n = None, None, 0
        for chunk in c.stream(path, body):
            if content(kind, chunk):
                n += 1
                last = time.perf_counter()
                first = first or last
        ttft.append(first - t)
        # Chunks with text, not tokens (a token that ends inside a UTF-8 character sends none);
        # the parallel section counts tokens from `usage`.
        tps.append((n - 1) / (last - first) if n > 1 else 0.0)
        tokens.append(n)
    print(json.dumps({"side": f"http {kind}", "prompt": tag, "prompt_tokens": prompt_tokens,
                      "ttft_s": ttft, "tokens_per_s": tps, "tokens": tokens}))


def mode_parallel(kind, base, key, clients, rounds, max_tokens, label):
    prompts = [STORIES[i % len(STORIES)] for i in range(clients)]
    conns = [Client(base, key) for _ in range(clients)]

    def one_round():
        results = [None] * clients
        barrier = threading.Barrier(clients + 1)

        def run(i):
            path, body = request(kind, prompts[i], max_tokens)
            barrier.wait()
            t = time.perf_counter()
            a = conns[i].post(path, body)
            results[i] = (t, time.perf_counter(), a["usage"]["completion_tokens"])

        threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
        for th in threads:
            th.start()
        barrier.wait()
        for th in threads:
            th.join()
        if any(r is None for r in results):
            raise SystemExit("a client failed")
        start = min(r[0] for r in results)
        end = max(r[1] for r in results)
        return sum(r[2] for r in results) / (end - start), [r[1] - r[0] for r in results], \
            [r[2] for r in results]

    one_round()  # warm-up (and bkg's first load of the model)
    agg, lat, tokens = [], [], []
    for _ in range(rounds):
        a, l, n = one_round()
        agg.append(a)
        lat += l
        tokens += n
    print(json.dumps({"side": f"parallel {kind}", "label": label, "clients": clients,
                      "aggregate_tokens_per_s": agg, "latency_s": lat, "tokens": tokens}))


def mode_bkg_rss(base, key, pid):
    c = Client(base, key)
    idle = rss_kib(pid)
    c.post("/api/plugins/candle/model.load",
           {"name": "smol", "path": "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"})
    loaded = rss_kib(pid)
    c.post("/api/plugins/candle/model.infer",
           {"model": "smol", "messages": [{"role": "user", "content": SHORT}], "max_tokens": 16,
            "temperature": 0})
    used = rss_kib(pid)
    print(json.dumps({"side": "rss bkg", "idle_kib": idle, "loaded_kib": loaded,
                      "used_kib": used}))


def mode_server_rss(base, pid):
    c = Client(base)
    path, body = request("llama-server", SHORT, 16)
    c.post(path, body)
    print(json.dumps({"side": "rss llama-server", "used_kib": rss_kib(pid)}))


def mode_llama_rss(gguf, threads):
    bare = rss_kib(os.getpid())
    from llama_cpp import Llama

    imported = rss_kib(os.getpid())
    llm = Llama(model_path=gguf, n_threads=threads, n_threads_batch=threads, n_ctx=2048,
                verbose=False)
    loaded = rss_kib(os.getpid())
    llm.create_completion(CHATML.format(SHORT), temperature=0, max_tokens=16)
    used = rss_kib(os.getpid())
    print(json.dumps({"side": "rss llama-cpp-python", "bare_kib": bare, "imported_kib": imported,
                      "loaded_kib": loaded, "used_kib": used}))


def med(xs):
    return statistics.median(xs)


def mode_summary(path):
    rows = [json.loads(line) for line in open(path) if line.strip().startswith("{")]
    for r in rows:
        side = r["side"]
        if "ttft_s" in r:
            print(f"RESULT {r.get('prompt', 'chat')} prompt, {side}: {r['prompt_tokens']} prompt "
                  f"tokens, time to first token median {med(r['ttft_s']) * 1e3:.1f} ms "
                  f"(min {min(r['ttft_s']) * 1e3:.1f}), generation median "
                  f"{med(r['tokens_per_s']):.1f} tokens/s ({r['tokens'][0]} generated, "
                  f"{len(r['ttft_s'])} rounds)")
        elif side.startswith("parallel"):
            lat = sorted(r["latency_s"])
            print(f"RESULT {side} ({r['label']}): {r['clients']} clients, aggregate median "
                  f"{med(r['aggregate_tokens_per_s']):.1f} tokens/s (rounds "
                  f"{', '.join(f'{x:.1f}' for x in r['aggregate_tokens_per_s'])}), "
                  f"per-request latency p50 {med(lat) * 1e3:.0f} ms, max {lat[-1] * 1e3:.0f} ms, "
                  f"tokens per request {min(r['tokens'])}-{max(r['tokens'])}")
        elif side == "rss bkg":
            print(f"RESULT memory bkg: host RSS idle (candle running, no model) "
                  f"{r['idle_kib'] / 1024:.1f} MiB, chat model loaded {r['loaded_kib'] / 1024:.1f}"
                  f" MiB, after 16 tokens {r['used_kib'] / 1024:.1f} MiB: "
                  f"{(r['used_kib'] - r['idle_kib']) / 1024:+.1f} MiB over the idle host")
        elif side == "rss llama-server":
            print(f"RESULT memory llama-server: process RSS with the model, after 16 tokens "
                  f"{r['used_kib'] / 1024:.1f} MiB")
        elif side == "rss llama-cpp-python":
            print(f"RESULT memory llama-cpp-python: bare python {r['bare_kib'] / 1024:.1f} MiB, "
                  f"after import {r['imported_kib'] / 1024:.1f} MiB, loaded "
                  f"{r['loaded_kib'] / 1024:.1f} MiB, after 16 tokens "
                  f"{r['used_kib'] / 1024:.1f} MiB: {(r['used_kib'] - r['bare_kib']) / 1024:+.1f}"
                  f" MiB over bare python, {(r['used_kib'] - r['imported_kib']) / 1024:+.1f} MiB "
                  f"over python with llama_cpp imported")


def main(argv):
    if not argv:
        raise SystemExit(__doc__)
    mode, a = argv[0], argv[1:]
    if mode == "prompts":
        mode_prompts(a[0])
    elif mode == "llama":
        mode_llama(a[0], a[1], int(a[2]), int(a[3]), int(a[4]), a[5])
    elif mode == "http":
        mode_http(a[0], a[1], a[2] or None, a[3], int(a[4]), int(a[5]), a[6])
    elif mode == "parallel":
        mode_parallel(a[0], a[1], a[2] or None, int(a[3]), int(a[4]), int(a[5]), a[6])
    elif mode == "bkg-rss":
        mode_bkg_rss(a[0], a[1], int(a[2]))
    elif mode == "server-rss":
        mode_server_rss(a[0], int(a[1]))
    elif mode == "llama-rss":
        mode_llama_rss(a[0], int(a[1]))
    elif mode == "summary":
        mode_summary(a[0])
    else:
        raise SystemExit(f"unknown mode {mode!r}\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv[1:])
