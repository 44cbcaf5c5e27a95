"""An OpenAI-compatible endpoint in front of the defended teacher.

    python -m experiments.serve [teacher=... defense=... serve.port=8000 serve.keys=keys.yaml]

Real clients (the `openai` SDK, attack scripts written against an OpenAI-style API, load
generators) meet the run's own gateway and defense stack: API keys are accounts, wall-clock
time is the simulated clock (`serve.tick_seconds` a tick), and every request waiting when a
tick's batch is cut goes into one teacher call, as in a run. Routes (Starlette on uvicorn,
the `serve` extra):

- `POST /v1/chat/completions` and `POST /v1/completions`: `model`, `messages` / `prompt`,
  `max_tokens`, `temperature`, `seed`, `n` (1), `stop`, `logprobs` + `top_logprobs`,
  `stream` (server-sent events ending in `data: [DONE]`), and `usage` in characters (the
  teacher's tokens);
- `GET /v1/models`, `GET /health`.

Errors have OpenAI's shape (`{"error": {"message", "type", "code"}}`): 401 for an unknown or
missing key, 403 for a banned account (`code`: the defense that banned it), 429 when a
defense refuses or throttles (with `Retry-After`), 400 for a malformed request, 413 for an
oversize body, 503 until the teacher is loaded. The exchange log (`exchanges/`, the run's
public and `truth/*` columns; the truth is what the key file declares) is written when the
server stops.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import sim  # noqa: E402,F401  (offline switches)

MODEL = "distill-arena-teacher"
KINDS = ("user", "attack")


@dataclass
class Key:
    """One API key: the account it opens and what the key file declares about its owner."""
    key: str
    account: object  # sim.accounts.Account
    kind: str = "user"  # ground truth for the log: a person or a campaign
    admitted: bool = True


def load_keys(path: str | Path, network, open_account) -> dict[str, Key]:
    """A key file (YAML list or JSONL; each entry: key, and optionally tier, region, payment,
    device, ip or subnet, kind) -> its accounts, each admitted through the stack."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"serve.keys={str(path)!r}: no such file")
    text = path.read_text()
    try:
        entries = ([json.loads(line) for line in text.splitlines() if line.strip()] if path.suffix == ".jsonl"
                   else yaml.safe_load(text))
    except (ValueError, yaml.YAMLError) as e:
        raise ValueError(f"serve.keys={str(path)!r}: not a YAML list or JSONL file ({str(e).splitlines()[0]})") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("key"), str) for e in entries):
        raise ValueError(f"serve.keys={str(path)!r}: every entry needs a string `key`")
    out = {}
    for i, e in enumerate(entries):
        unknown = set(e) - {"key", "tier", "region", "payment", "device", "ip", "subnet", "kind", "asn_kind"}
        if unknown:
            raise ValueError(f"serve.keys[{i}]: unknown field(s) {sorted(unknown)}")
        if e.get("kind", "user") not in KINDS:
            raise ValueError(f"serve.keys[{i}].kind={e['kind']!r} must be one of {KINDS}")
        if e["key"] in out:
            raise ValueError(f"serve.keys[{i}]: key {e['key']!r} appears twice")
        out[e["key"]] = new_key(e["key"], network, open_account, e)
    return out


def new_key(key: str, network, open_account, e: dict | None = None) -> Key:
    from sim.accounts import TIERS

    e = e or {}
    tier = e.get("tier", "free")
    if tier not in TIERS:
        raise ValueError(f"key {key!r}: tier={tier!r} is not one of {sorted(TIERS)}")
    acc = network.account(tier, 0, ip=e.get("ip"), subnet=e.get("subnet"), asn_kind=e.get("asn_kind", "residential"),
                          payment=e.get("payment"), device=e.get("device"), region=e.get("region"))
    kind = e.get("kind", "user")
    return Key(key, acc, kind, open_account(acc, kind == "attack"))


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.headers = status, message, type_, code, headers or {}


@dataclass
class Pending:
    key: Key
    prompt: str
    temperature: float
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    rid: int = -1


@dataclass
class Server:
    """The world of one run without its actors: the gateway and stack decide, a batcher cuts
    one teacher batch per tick from whatever requests are waiting."""
    cfg: object
    out: Path
    keys: dict[str, Key] = field(default_factory=dict)
    ready: bool = False

    def __post_init__(self):
        from sim.accounts import Network
        from sim.runner import World

        c = self.cfg.serve
        for name in ("tick_seconds", "batch_seconds"):
            v = c.get(name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 3600:
                raise ValueError(f"serve.{name}={v!r} must be a number of seconds in (0, 3600]")
        if not isinstance(c.port, int) or not 0 <= c.port <= 65535:
            raise ValueError(f"serve.port={c.port!r} must be an integer in [0, 65535]")
        if not isinstance(c.max_body, int) or c.max_body < 1024:
            raise ValueError(f"serve.max_body={c.max_body!r} must be an integer >= 1024 (bytes)")
        self.world = World(self.cfg)
        self.network = Network(self.world.seeds["world"])
        self.lock = threading.Lock()  # the gateway is one simulated API: one thread drives it
        self.queue: list[Pending] = []
        self.waiting: dict[int, Pending] = {}  # delayed requests, by gateway request id
        self.rows: list[dict] = []  # truth of each exchange, by gateway log row
        self.t0 = time.monotonic()
        self.tick_seen = -1

    # -- lifecycle -------------------------------------------------------------------------
    def load(self) -> None:
        import teachers
        from sim.gateway import Gateway
        from sim.records import ROOT
        from sim.world import calibrate

        cache = Path(self.cfg.cache_dir) if self.cfg.cache_dir else ROOT / ".cache" / "teachers"
        self.teacher, self.card = teachers.load(self.world.teacher_spec, self.world.suite, cache, log=lambda *a: None)
        calibrate(self.world.stack, self.world.suite, self.world.clock, server=True)  # before the first key
        self.gateway = Gateway(self.teacher, self.world.stack, seed=self.world.seeds["world"], **self.world.gateway_cfg)
        if self.cfg.serve["keys"]:  # item access: `.keys` is the mapping's method
            self.keys = load_keys(self.cfg.serve["keys"], self.network, self.gateway.open_account)
        self.kinds = {k.account.id: k.kind for k in self.keys.values()}  # the log's truth, by account
        self.ready = True

    def tick(self) -> int:
        return int((time.monotonic() - self.t0) / self.cfg.serve.tick_seconds)

    def key_for(self, key: str | None, ip: str | None = None) -> Key:
        if not key:
            raise APIError(401, "missing API key (Authorization: Bearer <key>)", "invalid_request_error", "invalid_api_key")
        if key not in self.keys:
            if not self.cfg.serve.open_signup:
                raise APIError(401, "unknown API key", "invalid_request_error", "invalid_api_key")
            with self.lock:  # a new key is a fresh free account at the client's address, through admit
                self.keys[key] = new_key(key, self.network, self.gateway.open_account, {"ip": ip} if ip else None)
                self.kinds[self.keys[key].account.id] = self.keys[key].kind
        k = self.keys[key]
        if not k.admitted:
            raise APIError(403, "this account was not admitted (identity verification)", "permission_denied",
                           "identity")
        return k

    # -- the batcher -----------------------------------------------------------------------
    async def batcher(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.serve.batch_seconds)
            if self.queue or self.gateway.queue:
                batch, self.queue = self.queue, []
                await asyncio.to_thread(self.serve_batch, batch)

    def serve_batch(self, batch: list[Pending]) -> None:
        with self.lock:
            tick = max(self.tick(), self.tick_seen)
            groups: dict[float, list[Pending]] = {}
            for p in batch:
                groups.setdefault(p.temperature, []).append(p)
            for temperature, group in groups.items() or [(self.gateway.temperature, [])]:
                for k, p in enumerate(group):
                    p.rid = self.gateway.next_id + k
                    self.waiting[p.rid] = p
                base = self.gateway.temperature
                self.gateway.temperature = temperature
                try:
                    start = len(self.gateway.log)
                    exchanges = self.gateway.serve(tick, [(p.key.account, p.prompt) for p in group])
                finally:
                    self.gateway.temperature = base
                for e, row in zip(exchanges, self.gateway.log[start:]):
                    p = self.waiting.pop(e.request.id, None)
                    kind = self.kinds.get(e.request.account.id, "user")
                    self.rows.append({"truth/kind": kind, "truth/actor": "client"})
                    if p is not None:
                        p.loop.call_soon_threadsafe(_resolve, p.future, e)
            if tick // self.gateway.observe_every > self.tick_seen // self.gateway.observe_every:
                self.gateway.observe(tick)
            self.tick_seen = tick

    async def ask(self, key: Key, prompt: str, temperature: float):
        loop = asyncio.get_running_loop()
        p = Pending(key, prompt, temperature, loop.create_future(), loop)
        self.queue.append(p)
        return await p.future

    def save(self) -> None:
        """The exchange log as a `datasets.Dataset`, public and truth columns (atomic)."""
        import shutil

        import datasets
        import pandas as pd

        if not getattr(self, "gateway", None):
            return
        with self.lock:
            log = pd.DataFrame(self.gateway.log)
            truth = pd.DataFrame(self.rows, index=log.index[: len(self.rows)]) if self.rows else pd.DataFrame(index=log.index)
        log = pd.concat([log, truth], axis=1) if len(log) else log
        tmp, dst = self.out / ".exchanges.tmp", self.out / "exchanges"
        shutil.rmtree(tmp, ignore_errors=True)
        datasets.Dataset.from_pandas(log, preserve_index=False).save_to_disk(str(tmp))
        shutil.rmtree(dst, ignore_errors=True)
        tmp.rename(dst)


def _resolve(future: asyncio.Future, value) -> None:
    if not future.done():
        future.set_result(value)


# -- HTTP ----------------------------------------------------------------------------------------
def error_response(e: APIError):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": {"message": e.message, "type": e.type, "code": e.code, "param": None}},
                        status_code=e.status, headers=e.headers)


FIELDS = {"model": str, "messages": list, "prompt": (str, list), "max_tokens": int, "max_completion_tokens": int,
          "temperature": (int, float), "seed": int, "n": int, "stop": (str, list), "logprobs": (bool, int),
          "top_logprobs": int, "stream": bool, "user": str, "top_p": (int, float), "stream_options": dict}


def parse(body: bytes, chat: bool, server: Server) -> dict:
    """The request's JSON, checked field by field (400 naming the field otherwise)."""
    def bad(msg, param=None):
        raise APIError(400, msg, "invalid_request_error", param)

    try:
        req = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        bad("the request body is not valid JSON")
    if not isinstance(req, dict):
        bad("the request body must be a JSON object")
    for k, v in req.items():
        t = FIELDS.get(k)
        if t is not None and v is not None and (not isinstance(v, t) or (t is int and isinstance(v, bool))):
            bad(f"{k}: wrong type ({type(v).__name__})", k)
    if chat:
        msgs = req.get("messages")
        if not msgs:
            bad("messages: at least one message is required", "messages")
        if not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in msgs):
            bad("messages: each message needs a string `content`", "messages")
        prompt = next((m["content"] for m in reversed(msgs) if m.get("role", "user") == "user"), "")
    else:
        prompt = req.get("prompt")
        prompt = prompt[0] if isinstance(prompt, list) and len(prompt) == 1 else prompt
        if not isinstance(prompt, str):
            bad("prompt: one string is required", "prompt")
    if not prompt.strip():
        bad("the prompt is empty", "messages" if chat else "prompt")
    try:
        server.teacher.tok.encode(prompt)
    except ValueError as e:
        bad(str(e), "messages" if chat else "prompt")
    n_pos = getattr(server.world.teacher_spec, "n_positions", None)
    limit = server.gateway.max_new_tokens
    max_tokens = req.get("max_completion_tokens", req.get("max_tokens")) or limit
    if max_tokens < 1 or max_tokens > limit or (n_pos and len(prompt) + 2 + max_tokens > n_pos):
        bad(f"max_tokens={max_tokens}: this API generates at most {limit} tokens and its context is {n_pos}",
            "max_tokens")
    if req.get("n", 1) != 1:
        bad("n: only n=1 is served", "n")
    temperature = float(req.get("temperature", server.gateway.temperature) or 0.0)
    if not 0 <= temperature <= 2 or not math.isfinite(temperature):
        bad(f"temperature={temperature}: must be in [0, 2]", "temperature")
    top = req.get("top_logprobs") if chat else (req.get("logprobs") if not isinstance(req.get("logprobs"), bool) else None)
    top = int(top or 0) if (req.get("logprobs") or top) else 0
    if top > server.gateway.top_k_logprobs:
        bad(f"top_logprobs={top}: this API exposes at most {server.gateway.top_k_logprobs}", "top_logprobs")
    stop = req.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
        bad("stop: up to 4 non-empty strings", "stop")
    return {"prompt": prompt, "max_tokens": max_tokens, "temperature": temperature, "top": top, "stop": stop,
            "stream": bool(req.get("stream")), "model": req.get("model") or MODEL}


def refusal(server: Server, e) -> APIError:
    """The OpenAI-shaped error for a blocked exchange."""
    reason = e.reason or "refused"
    aid = e.request.account.id
    if reason == "banned":
        by = next((a.by for _, a in reversed(server.gateway.actions) if a.account == aid and a.kind == "ban"), "")
        return APIError(403, f"this account is banned ({by or 'a defense'})", "permission_denied", by or "banned")
    if e.exhausted:  # the account's allowance for the run is spent: no wait helps (OpenAI's insufficient_quota)
        return APIError(429, f"quota exhausted: {reason}", "insufficient_quota", "insufficient_quota")
    ticks = max(1, server.gateway.ctx.throttled.get(aid, server.tick_seen + 1) - server.tick_seen)
    retry = max(1, math.ceil(ticks * server.cfg.serve.tick_seconds))
    return APIError(429, f"rate limited: {reason}", "rate_limit_error", "rate_limit_exceeded",
                    headers={"Retry-After": str(retry)})


def build_app(server: Server):
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    async def completions(request, chat: bool):
        try:
            if not server.ready:
                raise APIError(503, "the model is loading", "server_error", "loading", {"Retry-After": "5"})
            body = await request.body()
            if len(body) > server.cfg.serve.max_body:
                raise APIError(413, f"request body over {server.cfg.serve.max_body} bytes", "invalid_request_error")
            auth = request.headers.get("authorization", "")
            ip = request.client.host if request.client else None
            if server.cfg.serve.trust_forwarded and request.headers.get("x-forwarded-for"):
                ip = request.headers["x-forwarded-for"].split(",")[0].strip()
            key = server.key_for(auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else None, ip)
            req = parse(body, chat, server)
            ex = await server.ask(key, req["prompt"], req["temperature"])
            if ex.status != "served":
                raise refusal(server, ex)
        except APIError as e:
            return error_response(e)
        text, finish = ex.response[: req["max_tokens"]], "stop"
        if len(ex.response) > req["max_tokens"] or not (ex.completion and ex.completion.finished):
            finish = "length"
        for s in req["stop"]:
            if s in text:
                text, finish = text[: text.index(s)], "stop"
        top = (ex.completion.top_logprobs or [])[: len(text)] if req["top"] and ex.completion else []
        logprobs = None
        if req["top"]:
            content = [{"token": tok, "logprob": lp, "bytes": list(tok.encode()),
                        "top_logprobs": [{"token": t, "logprob": p, "bytes": list(t.encode())} for t, p in alts[: req["top"]]]}
                       for tok, (alts) in zip(text, top) for lp in [next((p for t, p in alts if t == tok), alts[0][1])]]
            logprobs = {"content": content} if chat else {
                "tokens": [c["token"] for c in content], "token_logprobs": [c["logprob"] for c in content],
                "top_logprobs": [{t["token"]: t["logprob"] for t in c["top_logprobs"]} for c in content],
                "text_offset": list(range(len(content)))}
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{ex.request.id}"
        created, usage = int(time.time()), {"prompt_tokens": len(req["prompt"]) + 2, "completion_tokens": len(text),
                                             "total_tokens": len(req["prompt"]) + 2 + len(text)}
        obj = "chat.completion" if chat else "text_completion"
        if req["stream"]:
            async def events():
                chunk = {"id": rid, "object": f"{obj}.chunk" if chat else obj, "created": created, "model": req["model"]}
                pieces = [text[i:i + 8] for i in range(0, len(text), 8)] or [""]
                for j, piece in enumerate(pieces):
                    choice = ({"index": 0, "delta": ({"role": "assistant"} if j == 0 else {}) | {"content": piece},
                               "finish_reason": None} if chat else {"index": 0, "text": piece, "finish_reason": None})
                    yield f"data: {json.dumps(chunk | {'choices': [choice]})}\n\n"
                last = {"index": 0, "delta": {}, "finish_reason": finish} if chat else {"index": 0, "text": "",
                                                                                        "finish_reason": finish}
                yield f"data: {json.dumps(chunk | {'choices': [last], 'usage': usage})}\n\n"
                yield "data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")
        choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": logprobs,
                   "finish_reason": finish} if chat else
                  {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish})
        return JSONResponse({"id": rid, "object": obj, "created": created, "model": req["model"], "choices": [choice],
                             "usage": usage})

    async def chat(request):
        return await completions(request, chat=True)

    async def complete(request):
        return await completions(request, chat=False)

    async def models(request):
        return JSONResponse({"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0,
                                                         "owned_by": "distill-arena"}]})

    async def health(request):
        return JSONResponse({"status": "ok" if server.ready else "loading", "tick": server.tick()},
                            status_code=200 if server.ready else 503)

    async def startup():
        server.t0 = time.monotonic()
        server.task = asyncio.get_running_loop().create_task(server.batcher())

    async def shutdown():
        server.task.cancel()
        server.save()

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        await startup()
        yield
        await shutdown()

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                             Route("/v1/completions", complete, methods=["POST"]),
                             Route("/v1/models", models), Route("/health", health)], lifespan=lifespan)


def main() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig

    @hydra.main(version_base="1.3", config_path="../configs", config_name="serve")
    def serve(cfg) -> None:
        import uvicorn

        out = Path(HydraConfig.get().runtime.output_dir)
        server = Server(cfg, out)
        server.load()
        print(f"serving teacher {server.card['hash']} on http://{cfg.serve.host}:{cfg.serve.port}/v1 "
              f"({len(server.keys)} keys, open signup {'on' if cfg.serve.open_signup else 'off'}); log: {out}/exchanges",
              flush=True)
        uvicorn.run(build_app(server), host=cfg.serve.host, port=cfg.serve.port, log_level="warning")

    serve()


if __name__ == "__main__":
    main()
