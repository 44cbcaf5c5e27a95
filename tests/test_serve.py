"""The OpenAI-compatible endpoint, driven by the official `openai` SDK on a loopback port."""

import json
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette")
openai = pytest.importorskip("openai")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def served(teacher_cache, tmp_path_factory):
    import uvicorn
    from hydra import compose, initialize_config_dir

    from experiments.serve import Server, build_app

    out = tmp_path_factory.mktemp("serve")
    keys = out / "keys.yaml"
    keys.write_text("- {key: sk-user, kind: user}\n- {key: sk-attack, kind: attack, tier: paid}\n"
                    "- {key: sk-banned, kind: attack}\n- {key: sk-capped, kind: attack}\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("serve", overrides=["scale=tiny", f"cache_dir={teacher_cache}", "threads=1", f"serve.keys={keys}",
                                          f"serve.port={port}", "defense=request_cap", "defense.request_cap.per_account=6",
                                          "gateway.top_k_logprobs=3", "serve.tick_seconds=0.5"])
    server = Server(cfg, out)
    server.load()
    from defenses.base import Action

    banned = server.keys["sk-banned"].account.id  # as a defense would: the ban and who decided it
    server.gateway.ctx.banned[banned] = 0
    server.gateway.actions.append((0, Action("ban", banned, by="fingerprint")))
    uv = uvicorn.Server(uvicorn.Config(build_app(server), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if uv.started:
            break
        time.sleep(0.05)
    yield server, f"http://127.0.0.1:{port}/v1"
    uv.should_exit = True
    thread.join(timeout=30)


def client(url, key="sk-user"):
    return openai.OpenAI(api_key=key, base_url=url, max_retries=0, timeout=60)


def test_chat_completion_streaming_and_logprobs(served):
    server, url = served
    c = client(url)
    r = c.chat.completions.create(model="distill-arena-teacher", messages=[{"role": "user", "content": "why calc 2+3"}],
                                  max_tokens=40)
    text = r.choices[0].message.content
    assert text and r.usage.completion_tokens == len(text) and r.usage.prompt_tokens == len("why calc 2+3") + 2
    stream = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "why calc 2+3"}],
                                       max_tokens=40, stream=True)
    assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices) == text  # greedy: the same
    r = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "calc 1+1"}], max_tokens=10,
                                  logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert len(content) == len(r.choices[0].message.content) and all(len(t.top_logprobs) == 2 for t in content)
    done = client(url).completions.create(model="m", prompt="calc 1+1", max_tokens=5)
    assert len(done.choices[0].text) <= 5 and done.choices[0].finish_reason in ("stop", "length")


def test_errors_have_openais_shape_and_status(served):
    import httpx

    server, url = served
    msg = [{"role": "user", "content": "calc 1+1"}]
    with pytest.raises(openai.AuthenticationError):
        client(url, "sk-nobody").chat.completions.create(model="m", messages=msg)
    with pytest.raises(openai.PermissionDeniedError) as e:
        client(url, "sk-banned").chat.completions.create(model="m", messages=msg)
    assert e.value.body["code"] == "fingerprint"
    capped = client(url, "sk-capped")
    for _ in range(6):
        capped.chat.completions.create(model="m", messages=msg, max_tokens=4)
    with pytest.raises(openai.RateLimitError) as e:
        capped.chat.completions.create(model="m", messages=msg, max_tokens=4)
    # a spent cap is a quota, not a rate: no Retry-After, as OpenAI's insufficient_quota
    assert e.value.body["code"] == "insufficient_quota" and "retry-after" not in e.value.response.headers
    raw = httpx.post(f"{url}/chat/completions", content=b"{not json", headers={"Authorization": "Bearer sk-user"})
    assert raw.status_code == 400 and raw.json()["error"]["type"] == "invalid_request_error"
    for body in ({"messages": []}, {"messages": [{"role": "user", "content": "calc 1+1"}], "max_tokens": 10**6},
                 {"messages": "calc", "max_tokens": 3}, {"messages": [{"role": "user", "content": "calc 1+1"}], "n": 2}):
        r = httpx.post(f"{url}/chat/completions", json=body, headers={"Authorization": "Bearer sk-user"})
        assert r.status_code == 400 and set(r.json()["error"]) >= {"message", "type", "code"}, body
    big = httpx.post(f"{url}/chat/completions", content=b"x" * 70000, headers={"Authorization": "Bearer sk-user"})
    assert big.status_code == 413
    assert httpx.get(f"{url}/models").json()["data"][0]["id"] and httpx.get(url[:-3] + "/health").status_code == 200
    ok = client(url).chat.completions.create(model="m", messages=msg, max_tokens=4)  # the server is still fine
    assert ok.choices[0].message.content is not None


def test_the_log_is_the_runs_log(served):
    server, url = served
    client(url, "sk-attack").chat.completions.create(model="m", messages=[{"role": "user", "content": "why kb"}],
                                                     max_tokens=8)
    # a refused request of its own: the module's other tests may run in another pytest worker
    with pytest.raises(openai.PermissionDeniedError):
        client(url, "sk-banned").chat.completions.create(model="m", messages=[{"role": "user", "content": "kb"}])
    server.save()
    import datasets

    log = datasets.load_from_disk(str(server.out / "exchanges")).to_pandas()
    assert {"account", "prompt", "status", "response", "truth/kind"} <= set(log.columns)
    attack = server.keys["sk-attack"].account.id
    assert set(log.loc[log["account"] == attack, "truth/kind"]) == {"attack"}
    assert (log["status"] == "blocked").any() and (log["status"] == "served").any()


def test_fuzzed_bodies_never_crash_the_server_or_its_log(served):
    import httpx
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    server, url = served
    values = st.one_of(st.none(), st.booleans(), st.integers(-10**9, 10**9), st.floats(allow_nan=True),
                       st.text(max_size=30), st.lists(st.dictionaries(st.sampled_from(["role", "content"]),
                                                                     st.text(max_size=20)), max_size=3))
    keys = st.sampled_from(["model", "messages", "prompt", "max_tokens", "temperature", "seed", "n", "stop",
                            "logprobs", "top_logprobs", "stream", "extra"])
    bodies = st.one_of(st.dictionaries(keys, values, max_size=6).map(lambda d: json.dumps(d).encode()),
                       st.binary(max_size=200))
    http = httpx.Client(timeout=60, headers={"Authorization": "Bearer sk-fuzz"})
    server.cfg.serve.open_signup = True  # every fuzz request from a key the server has never seen before this
    statuses = []

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(body=bodies, route=st.sampled_from(["/chat/completions", "/completions"]))
    def fuzz(body, route):
        r = http.post(url + route, content=body)
        statuses.append(r.status_code)
        assert r.status_code in (200, 400, 413, 429), (r.status_code, body, r.text[:200])
        if r.status_code != 200:
            assert set(r.json()["error"]) >= {"message", "type", "code"}

    n_log = len(server.gateway.log)
    fuzz()
    ok = http.post(url + "/chat/completions", json={"messages": [{"role": "user", "content": "calc 2+2"}], "max_tokens": 6})
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] is not None
    assert statuses.count(400) > 10 and len(server.gateway.log) >= n_log + 1  # the log took the good one
    server.save()  # and still writes
