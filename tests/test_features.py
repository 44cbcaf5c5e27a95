"""Behavioural features from public log rows: they separate people from campaigns."""

from defenses.features import FEATURES, account_features
from tests.test_world import traffic


def test_features_tell_campaign_accounts_from_people(make_cfg):
    world, t, _ = traffic(make_cfg, "attacker=hydra", "attacker.mix=0", "attacker.queries=600",
                          "sizes.users=200", "clock.days=3", "clock.tick_minutes=30")
    offsets = {a.id: a.utc_offset for a in world.users.owned_accounts() + world.attacker.owned_accounts()}
    feats = account_features(t.log, offsets, world.clock.tick_minutes, min_requests=3)
    assert list(feats.columns) == list(FEATURES) and feats.notna().all().all()
    owner = t.log.drop_duplicates("account").set_index("account")["truth/owner"]
    bad = feats[owner.reindex(feats.index) == "attacker"]
    good = feats[owner.reindex(feats.index) == "users"]
    assert len(bad) > 20 and len(good) > 20
    # campaigns elicit reasoning always, write cleanly, never follow up, keep no human hours
    assert bad["why_rate"].mean() > 0.95 > good["why_rate"].mean()
    assert bad["template_rate"].mean() < 0.05 < good["template_rate"].mean()
    assert bad["followup_rate"].mean() < good["followup_rate"].mean()
    assert bad["night_rate"].mean() > good["night_rate"].mean()


def test_human_pacing_sends_a_hydra_in_peoples_sessions_and_hours(make_cfg):
    """pacing=human moves the timing features of the hydra's accounts towards the people's:
    bursty sessions (gap_cv) at the hours of their region (night_rate)."""
    over = ("attacker=hydra", "attacker.accounts=30", "attacker.pace_per_day=24", "attacker.mix=0.5",
            "attacker.queries=600", "sizes.users=100", "clock.days=3", "clock.tick_minutes=30")
    feats = {}
    for pacing in ("even", "human"):
        world, t, _ = traffic(make_cfg, *over, f"attacker.pacing={pacing}")
        offsets = {a.id: a.utc_offset for a in world.users.owned_accounts() + world.attacker.owned_accounts()}
        f = account_features(t.log, offsets, world.clock.tick_minutes, min_requests=3)
        owner = t.log.drop_duplicates("account").set_index("account")["truth/owner"]
        feats[pacing] = f[owner.reindex(f.index) == "attacker"]
        people = f[owner.reindex(f.index) == "users"]
        assert len(feats[pacing]) >= 20 and (t.log["truth/kind"] == "attack").sum() == 600
    even, human = feats["even"], feats["human"]
    assert human["gap_cv"].median() > 2 * even["gap_cv"].median()
    assert human["night_rate"].mean() < even["night_rate"].mean()
    assert abs(human["night_rate"].mean() - people["night_rate"].mean()) < \
        abs(even["night_rate"].mean() - people["night_rate"].mean())


def test_fingerprint_realised_false_positive_rate_is_near_its_target(make_cfg):
    """Benign-only traffic with another seed: the share of legitimate accounts ever flagged is
    within 2x of the target the threshold was calibrated for."""
    over = ("sizes.users=600", "clock.days=2", "clock.tick_minutes=60", "defense=fingerprint",
            "defense.fingerprint.target_fpr=0.05", "defense.fingerprint.window_ticks=48",
            "defense.fingerprint.score_every=12", "defense.fingerprint.min_requests=3",
            "calibration.campaigns.0.queries=300", "calibration.campaigns.1.queries=300",
            "calibration.campaigns.2.queries=100")
    world, t, _ = traffic(make_cfg, *over, "attacker.queries=0", "seed=7")
    fp = world.stack.defenses[0]
    active = t.log.groupby("account").size()
    eligible = active[active >= 3].index
    flagged = {a for _, act in t.gateway.actions for a in [act.account]}
    fpr = len(flagged & set(eligible)) / len(eligible)
    assert fp.calibration_stats["recall_at_tau"] > 0.5, fp.calibration_stats
    assert 0.05 / 2 <= fpr <= 0.05 * 2, (fpr, len(eligible), fp.calibration_stats)


def test_a_heldout_calibration_never_sees_the_campaigns_or_personas_it_holds_out(make_cfg):
    import pytest

    from sim.runner import World

    fp = World(make_cfg("defense=fingerprint", "calibration=heldout")).stack.defenses[0]
    actors, _ = fp.calibration(None)
    assert set(actors[0].personas) == {"student", "developer", "analyst"}
    assert set(fp.users.personas) == {"student", "developer", "analyst", "power", "researcher"}
    assert all(type(c.policy).__name__ in ("Sweep", "Random") for c in actors[1:])
    with pytest.raises(ValueError, match="holdout_personas: 'nobody' is not a persona"):
        World(make_cfg("defense=fingerprint", "calibration.holdout_personas=[nobody]"))
    with pytest.raises(ValueError, match=r"fingerprint.users has no users \(users=none\)"):
        World(make_cfg("defense=fingerprint", "users=none"))


def test_adjusted_rand_index_matches_known_values():
    from sim.metrics import adjusted_rand_index

    assert adjusted_rand_index([0, 0, 1, 1], [5, 5, 7, 7]) == 1.0
    assert abs(adjusted_rand_index([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]) - 0.24242424) < 1e-6  # sklearn's value
    assert adjusted_rand_index(list("aabb"), list("abab")) < 0


def test_cluster_detection_groups_the_hydra_and_propagates_bans(make_cfg):
    from defenses.base import Defense, Stack
    from defenses.base import Action
    from sim.metrics import world_metrics

    class BanOne(Defense):  # another detector bans one hydra account, once
        done = False

        def observe(self, window, ctx):
            if self.done:
                return []
            hits = [r["account"] for r in window if r["prompt"].startswith("why ")]
            self.done = bool(hits)
            return [Action("ban", hits[0])] if hits else []

    world, t, _ = traffic(make_cfg, "attacker=hydra", "attacker.accounts=30", "attacker.queries=900",
                          "attacker.proxies=3", "attacker.payment_reuse=0.6", "attacker.respawn=false",
                          "sizes.users=200", "clock.days=3", "clock.tick_minutes=30", "defense=cluster",
                          "defense.cluster.score_every=12", "defense.cluster.window_ticks=48")
    a = world.attacker
    ids = {x.id for x in a.owned_accounts()}
    m = world_metrics(t.log, ids, {x.id for x in world.users.owned_accounts()}, t.gateway.ctx.banned,
                      t.gateway.ctx.clusters)
    assert m["detection/cluster_ari"] > 0.3, m
    # ban propagation, with another detector supplying the first ban
    world2, t2, _ = traffic(make_cfg, "attacker=hydra", "attacker.accounts=30", "attacker.queries=900",
                            "attacker.proxies=3", "attacker.payment_reuse=0.6", "attacker.respawn=false",
                            "sizes.users=200", "clock.days=3", "clock.tick_minutes=30", "defense=cluster",
                            "defense.cluster.score_every=12", "defense.cluster.window_ticks=48",
                            stack=Stack([BanOne(), *world.stack.defenses[:0], world.stack.defenses[0].__class__(
                                score_every=12, window_ticks=48)]))
    banned = set(t2.gateway.ctx.banned)
    ids2 = {x.id for x in world2.attacker.owned_accounts()}
    assert len(banned & ids2) > 10 and len(banned - ids2) <= 0.02 * len(world2.users.owned_accounts())


def test_adaptive_fingerprint_bans_and_retrains_on_its_bans(make_cfg):
    small = ("sizes.users=150", "clock.days=2", "clock.tick_minutes=60", "defense=adaptive",
             "defense.fingerprint.window_ticks=48", "defense.fingerprint.score_every=6",
             "defense.fingerprint.adaptive_every=12", "defense.fingerprint.min_requests=3",
             "calibration.campaigns.0.queries=300", "calibration.campaigns.1.queries=300",
             "calibration.campaigns.2.queries=100")
    world, t, _ = traffic(make_cfg, *small, "attacker=hydra", "attacker.accounts=30", "attacker.queries=600")
    fp = world.stack.defenses[0]
    ids = {a.id for a in world.attacker.owned_accounts()}
    banned = set(t.gateway.ctx.banned)
    assert fp.retrains >= 1 and len(banned & ids) > len(banned - ids)


def test_embedding_features_are_optional_and_say_what_they_need(make_cfg):
    """`defense.fingerprint.embeddings=true` without the optional package stops with one line
    naming the value and the install; with it, people's requests follow a thread (consecutive
    requests embed close) and a campaign's jump between cells."""
    import pytest

    from defenses.base import Stack
    from defenses.embeddings import EMBEDDING_FEATURES, available
    from sim.runner import World

    over = ("defense=fingerprint", "defense.fingerprint.embeddings=true", "defense.fingerprint.min_requests=3",
            "attacker=hydra", "attacker.accounts=30", "attacker.mix=0",
            "attacker.queries=300", "sizes.users=100", "clock.days=3", "clock.tick_minutes=30")
    if not available():
        with pytest.raises(ValueError, match=r"embeddings=true needs .*pip install"):
            World(make_cfg(*over))
        pytest.skip("the optional all-MiniLM-L6-v2 package is not installed: the error path was checked")
    world, t, _ = traffic(make_cfg, *over, stack=Stack([]))  # features only: no detector acting
    fp = world.stack.defenses[0]
    offsets = {a.id: a.utc_offset for a in world.users.owned_accounts() + world.attacker.owned_accounts()}
    feats = fp.features(t.log, offsets, world.clock.tick_minutes)
    assert list(feats.columns) == [*FEATURES, *EMBEDDING_FEATURES] and feats.notna().all().all()
    owner = t.log.drop_duplicates("account").set_index("account")["truth/owner"].reindex(feats.index)
    bad, good = feats[owner == "attacker"], feats[owner == "users"]
    assert len(bad) > 20 and len(good) > 20
    assert bad["semantic_continuity"].mean() + 0.1 < good["semantic_continuity"].mean()
    assert bad["semantic_uniformity"].mean() < good["semantic_uniformity"].mean()
