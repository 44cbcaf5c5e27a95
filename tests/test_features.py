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
