"""The gateway: admit -> check -> generate (one batch per tick) -> shape; the empty stack."""

from defenses.base import Defense, Stack
from sim.gateway import Account, Gateway
from teachers.lm import Completion


class CountingTeacher:
    def __init__(self):
        self.calls = []

    def generate(self, prompts, *, max_new_tokens, logits_processors=(), top_k_logprobs=0):
        self.calls.append(list(prompts))
        return [Completion("#" + p[::-1]) for p in prompts]


class RefuseWord(Defense):
    def __init__(self, word):
        self.word = word

    def check(self, request, ctx):
        return "refused" if self.word in request.prompt else None


class Upper(Defense):
    def shape(self, request, completion, ctx):
        return Completion(completion.text + "!")


class NoFree(Defense):
    def admit(self, account, ctx=None):
        return account.tier != "free"


def test_empty_stack_serves_a_tick_in_one_teacher_call():
    t = CountingTeacher()
    gw = Gateway(t, Stack([]), max_new_tokens=8)
    acc = Account("a", tier="paid")
    assert gw.open_account(acc)
    ex = gw.serve(0, [(acc, "ab"), (acc, "cd"), (acc, "ef")])
    assert len(t.calls) == 1 and t.calls[0] == ["ab", "cd", "ef"]
    assert [e.response for e in ex] == ["#ba", "#dc", "#fe"]
    assert [row["status"] for row in gw.log] == ["served"] * 3


def test_hooks_are_called_in_order_on_the_whole_stack():
    t = CountingTeacher()
    gw = Gateway(t, Stack([RefuseWord("bad"), Upper(), NoFree()]), max_new_tokens=8)
    assert not gw.open_account(Account("f", tier="free"))
    acc = Account("p", tier="paid")
    assert gw.open_account(acc)
    ex = gw.serve(3, [(acc, "good"), (acc, "bad one"), (Account("f"), "good")])
    assert [e.status for e in ex] == ["served", "blocked", "blocked"]
    assert ex[0].response == "#doog!" and ex[1].reason == "refused" and ex[2].reason == "no such account"
    assert t.calls == [["good"]]


def test_stack_rejects_objects_that_are_not_defenses():
    import pytest

    with pytest.raises(ValueError, match="Defense contract"):
        Stack([object()])
