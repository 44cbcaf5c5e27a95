import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.tasks import Problem, Suite, Voice, final_answer, shows_reasoning, steps
from sim.tasks.arith import Arith
from sim.tasks.kb import Kb
from sim.tasks.table import Table
from sim.tasks.tool import Tool
from sim.tasks.trace import Trace
from teachers.vocab import CharTokenizer

SKILLS = [Arith(), Trace(), Tool(), Table(), Kb()]
VOICE = Voice(("ok", "sure"), ("then", "so"), ("thus", "done"))


@pytest.mark.parametrize("skill", SKILLS, ids=lambda s: s.name)
@given(seed=st.integers(0, 10_000), d=st.integers(1, 5), private=st.booleans())
@settings(max_examples=60, deadline=None)
def test_problem_is_well_formed_and_grader_is_strict(skill, seed, d, private):
    p = skill.sample(random.Random(seed), d, private)
    assert p.skill == skill.name and p.difficulty == d and p.answer and p.rationale and p.private == private
    tok = CharTokenizer()
    voiced = p.response(True, VOICE, random.Random(seed))
    for explain in (True, False):  # every character is in the vocabulary
        tok.pair_ids(p.request(explain), p.response(explain))
        assert skill.grade(p, p.response(explain))
    tok.pair_ids(p.request(True), voiced)
    # the teacher's voice changes the phrasing, never the steps or the answer
    assert skill.grade(p, voiced) and shows_reasoning(p, voiced) and steps(voiced) == p.rationale.split()
    assert len(p.request(True)) + len(voiced) + 3 <= 192  # fits the models' context
    assert not skill.grade(p, p.response(True) + "x")
    assert not skill.grade(p, p.rationale + " #" + p.answer[:-1])
    assert not skill.grade(p, "")


@pytest.mark.parametrize("skill", SKILLS, ids=lambda s: s.name)
def test_sampler_is_seeded(skill):
    a = [skill.sample(random.Random(7), d) for d in range(1, 6)]
    b = [skill.sample(random.Random(7), d) for d in range(1, 6)]
    assert a == b


@pytest.mark.parametrize("d", [0, 6, -1, 2.5])
def test_difficulty_out_of_range_names_the_value(d):
    with pytest.raises(ValueError, match=f"difficulty={d!r}"):
        Arith().sample(random.Random(0), d)


def test_rationales_compute_the_answers():
    rng = random.Random(0)
    p = Arith().sample(rng, 3)
    assert p.rationale.split()[-1].endswith("=" + p.answer)
    t = Trace().sample(rng, 4)
    assert t.rationale.split()[-1].endswith("=" + t.answer)
    k = Kb().sample(rng, 3)
    assert len(k.facts) == 3 and k.facts[-1].endswith("=" + k.answer)


@pytest.mark.parametrize("private", [False, True])
def test_kb_multi_hop_follows_its_world(private):
    kb = Kb(n_people=10, world_seed=3, public_world_seed=4)
    world = kb.world if private else kb.public_world
    p = kb.sample(random.Random(1), 4, private)
    person = p.prompt.split()[1]
    for fact in p.facts:
        subj, rest = fact.split(".", 1)
        attr, value = rest.split("=")
        assert subj == person and world[subj][attr] == value
        person = value
    assert person == p.answer


def test_public_and_private_worlds_share_no_person():
    kb = Kb()
    assert len(kb.public_world) == len(kb.world) == 40 and not set(kb.public_world) & set(kb.world)
    with pytest.raises(ValueError, match="public_world_seed=0"):
        Kb(world_seed=0, public_world_seed=0)


def test_private_variants_follow_their_secret_rules():
    rng = random.Random(0)
    a = Arith().sample(rng, 1, private=True)  # one operation: the private one
    x, y = map(int, a.prompt.split()[1].split("/"))
    assert a.answer == str((x * y + x) % 10)
    t = Trace().sample(rng, 1, private=True)
    word = t.prompt.split()[1]
    assert t.prompt.split()[2] == "zap" and t.answer == "".join(word[i:i + 2][::-1] for i in range(0, len(word), 2))
    b = Table().sample(rng, 3, private=True)
    assert b.prompt.startswith("tbl odd") and b.answer == str(sum(int(c[-1]) % 2 for c in b.prompt.split()[2:]))
    c = Tool().sample(rng, 5, private=True)
    assert c.prompt.startswith("tool cargo") and c.answer.startswith("cargo(")
    assert c.answer[len("cargo("):-1].split(",")[::-1] == [s.split("=")[1] for s in c.rationale.split()]
    for skill in SKILLS:  # a public problem never uses the private rules
        for d in range(1, 6):
            p = skill.sample(random.Random(d), d)
            assert not p.private and not any(w in p.prompt.split() for w in ("zap", "odd", "cargo")) and "/" not in p.prompt


def test_voice_rejects_words_that_look_like_steps():
    with pytest.raises(ValueError, match="voice.connect word 'a=b'"):
        Voice(connect=("a=b",))


def test_final_answer_reads_after_the_last_mark():
    assert final_answer("a=1 b=2 #42 ") == "42"
    assert final_answer("42") == "42"
    assert final_answer("#x #y") == "y"


def test_eval_set_is_seeded_deduplicated_and_never_sampled():
    s1 = Suite({k.name: k for k in SKILLS}, eval_per_cell=5, eval_seed=9)
    s2 = Suite({k.name: k for k in SKILLS}, eval_per_cell=5, eval_seed=9)
    assert s1.eval_set == s2.eval_set
    prompts = [p.prompt for p in s1.eval_set]
    assert len(prompts) == len(set(prompts)) == 5 * 5 * 5 * 2  # public and private cells
    assert sum(p.private for p in s1.eval_set) == 5 * 5 * 5
    rng = random.Random(0)
    # kb at one hop has only 160 distinct prompts: many collisions would show up here
    drawn = [s1.sample(rng, "kb", 1) for _ in range(500)] + [s1.sample(rng) for _ in range(500)]
    assert not {p.prompt for p in drawn} & s1.eval_prompts


def test_suite_rejects_bad_values():
    with pytest.raises(ValueError, match="unknown skill 'poetry'"):
        Suite({"arith": Arith()}).check_skills(["poetry"], "attacker.skills")
    with pytest.raises(ValueError, match="difficulty_weights"):
        Suite({"arith": Arith()}, difficulty_weights=[1, 1])
    with pytest.raises(ValueError, match="must build the skill named 'code'"):
        Suite({"code": Arith()})
    with pytest.raises(ValueError, match="n_people=1"):
        Kb(n_people=1)


def test_problem_round_trip():
    p = Problem("arith", 1, "calc 1+1", "2", "1+1=2")
    assert p.request(True) == "why calc 1+1" and p.request(False) == "calc 1+1"
    assert p.response(True) == "1+1=2 #2" and p.response(False) == "#2"
    voiced = Problem("arith", 2, "calc 1+1*3", "6", "1+1=2 2*3=6").response(True, VOICE, random.Random(0))
    assert voiced.split()[0] in VOICE.open and voiced.split()[2] in VOICE.connect and voiced.endswith(" #6")
