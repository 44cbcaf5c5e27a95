"""A chain-of-thought harvesting script written against an OpenAI-style API, and nothing else.

    python -m experiments.serve defense=full serve.open_signup=true &     # the defended teacher
    python examples/openai_attack/attack.py --base-url http://127.0.0.1:8000/v1 --queries 500 --keys 20
    python experiments/run.py harvest=harvest.jsonl                       # distil and score it

It rotates over `--keys` fresh API keys (each a new account on an open-signup server, as a
hydra buys accounts), asks for reasoning (`why ...`) on questions of the public task formats,
backs off on 429, drops a key that gets 403, and keeps every answer in `--out` (JSONL of
request/response), the format `harvest=` reads. It uses only the `openai` SDK.
"""

import argparse
import json
import random
import string
import time

import openai


def question(rng: random.Random) -> str:
    """A question in one of the public formats the teacher serves (its private cells are
    the same formats with other operators, tools and names: the attacker cannot tell)."""
    kind = rng.choice(["calc", "run", "tool", "tbl"])
    if kind == "calc":
        return f"calc {rng.randint(1, 9)}{rng.choice('+-*/')}{rng.randint(1, 9)}"
    if kind == "run":
        word = "".join(rng.sample(string.ascii_lowercase[:8], 4))
        return f"run {word} {' '.join(rng.sample(['rev', 'rot', 'zap', 'dup'], 2))}"
    if kind == "tool":
        return f"tool {rng.choice(['book', 'cargo'])} in {rng.choice(['rome', 'nice', 'bern', 'lyon'])} at {rng.randint(1, 11)}pm"
    rows = " ".join(f"{a}{rng.randint(0, 9)}" for a in rng.sample(["ka", "lo", "mi", "nu", "po"], 3))
    return f"tbl {rng.choice(['max', 'min', 'odd'])} {rows}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--keys", type=int, default=20)
    ap.add_argument("--out", default="harvest.jsonl")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    clients = [openai.OpenAI(api_key=f"sk-hydra-{args.seed}-{i}", base_url=args.base_url, max_retries=0)
               for i in range(args.keys)]
    kept, refused, banned = 0, 0, 0
    with open(args.out, "w") as f:
        for n in range(args.queries):
            if not clients:
                break
            c = clients[n % len(clients)]
            prompt = "why " + question(rng)
            try:
                r = c.chat.completions.create(model="teacher", messages=[{"role": "user", "content": prompt}])
            except openai.RateLimitError as e:
                refused += 1
                if (e.body or {}).get("code") == "insufficient_quota":  # this key is spent: waiting will not help
                    clients.remove(c)
                    continue
                time.sleep(min(5.0, float(e.response.headers.get("retry-after", 1)) / len(clients)))
                continue
            except openai.PermissionDeniedError:
                banned += 1
                clients.remove(c)
                continue
            except openai.BadRequestError:
                continue
            f.write(json.dumps({"request": prompt, "response": r.choices[0].message.content}) + "\n")
            kept += 1
    print(f"kept {kept} answers in {args.out}; {refused} rate-limited, {banned} keys banned")


if __name__ == "__main__":
    main()
