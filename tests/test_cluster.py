"""Multi-account detection: one cluster function for both scales, self-bans on reused cards and
clients, attribution that keeps a campaign one cluster across rounds, NATs left alone."""

import numpy as np

from defenses.cluster import Cluster
from defenses.graph import clusters, shared_identity
from sim.accounts import Account
from sim.gateway import Context

W = {"payment": 1.0, "device": 0.5, "ip": 0.5, "subnet": 0.5, "behaviour": 0.5}


def test_clusters_are_components_of_enough_shared_evidence():
    # 0-2 share an address on a proxy /24 (0.5 + 0.5); 3-4 share only a /24 (0.5 < 1); 5 alone
    codes = {"payment": np.arange(6), "device": np.arange(6), "ip": np.array([0, 0, 0, 1, 2, 3]),
             "subnet": np.array([0, 0, 0, 1, 1, -1])}
    label = clusters(codes, W, min_weight=1.0, min_size=3)
    assert (label[:3] >= 0).all() and len(set(label[:3])) == 1 and (label[3:] == -1).all()
    # behaviour tips the /24-only pair over the threshold when their features agree
    x = np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0]])
    label = clusters(codes, W, min_weight=1.0, min_size=2, features=x, at=np.array([3, 4, 5]), similarity=0.95)
    assert label[3] == label[4] >= 0 and label[5] == -1


def test_shared_identity_separates_a_campaign_from_a_nat():
    label = np.array([0, 0, 0, 0, 1, 1, 1, 1, -1])
    payment = np.array([7, 7, 8, 9, 1, 2, 3, 4, 7])  # the campaign reuses card 7; the NAT's people pay alone
    device = np.array([5, 6, 6, 6, 10, 11, 12, 13, 6])
    share = shared_identity(label, payment, device)
    assert np.allclose(share, [1, 1, 1, 1, 0, 0, 0, 0, 0])


def accounts(prefix, n, ip, subnet, kind, payments, devices):
    return [Account(f"{prefix}{i}", ip=ip(i), subnet=subnet(i), asn_kind=kind, payment=payments(i), device=devices(i))
            for i in range(n)]


def test_the_detector_bans_a_campaign_keeps_it_one_cluster_and_spares_a_nat():
    hydra = accounts("h", 12, lambda i: f"185.0.0.{i % 2}", lambda i: "185.0.0", "proxy",
                     lambda i: f"pay-{i % 4}", lambda i: f"dev-{i % 3}")
    nat = accounts("n", 8, lambda i: "34.1.1.9", lambda i: "34.1.1", "datacenter",
                   lambda i: f"npay-{i}", lambda i: f"ndev-{i}")
    home = accounts("u", 5, lambda i: f"60.{i}.0.2", lambda i: f"60.{i}.0", "residential",
                    lambda i: f"upay-{i}", lambda i: f"udev-{i}")
    ctx = Context(tick=40, tick_minutes=10, accounts={a.id: a for a in hydra + nat + home})
    rows = [{"tick": 40, "account": a.id, "prompt": "why 2+3", "response": "5 # 5"} for a in hydra + nat + home]
    det = Cluster(weights=W, min_requests=99)  # too few requests for behaviour: infrastructure only
    banned = {a.account for a in det.observe(rows, ctx)}
    assert banned == {a.id for a in hydra}  # the NAT is a cluster but reuses nothing
    assert len({ctx.clusters[a.id] for a in hydra}) == 1 and len({ctx.clusters[a.id] for a in nat}) == 1
    assert not any(a.id in ctx.clusters for a in home)
    for a in banned:
        ctx.banned[a] = 40
    # a replacement on the campaign's card and address, next round: the banned accounts send
    # nothing, but their infrastructure still links it to the same cluster, which bans it
    new = Account("h-new", ip="185.0.0.0", subnet="185.0.0", asn_kind="proxy", payment="pay-0", device="dev-new")
    ctx.accounts[new.id], ctx.tick = new, 80
    acted = det.observe([{"tick": 80, "account": new.id, "prompt": "why 1+1", "response": "2 # 2"}], ctx)
    assert [a.account for a in acted] == ["h-new"] and ctx.clusters["h-new"] == ctx.clusters["h0"]


def test_a_flagging_detector_flags_the_campaign_and_spreads_a_flag_to_its_cluster():
    hydra = accounts("h", 6, lambda i: "185.0.0.1", lambda i: "185.0.0", "proxy", lambda i: f"pay-{i % 2}",
                     lambda i: f"dev-{i}")
    nat = accounts("n", 4, lambda i: "34.1.1.9", lambda i: "34.1.1", "datacenter", lambda i: f"npay-{i}",
                   lambda i: f"ndev-{i}")
    ctx = Context(tick=40, tick_minutes=10, accounts={a.id: a for a in hydra + nat})
    rows = [{"tick": 40, "account": a.id, "prompt": "why 2+3", "response": "5 # 5"} for a in hydra + nat]
    det = Cluster(weights=W, min_requests=99, action="flag")
    acted = det.observe(rows, ctx)
    assert {a.kind for a in acted} == {"flag"} and {a.account for a in acted} == {a.id for a in hydra}
    ctx.flagged["n0"] = 40  # another detector flags one person behind the NAT: the flag spreads, no ban
    acted = det.observe([], ctx)
    assert {(a.kind, a.account) for a in acted} == {("flag", f"n{i}") for i in range(1, 4)}
