"""Evaluation at scale: sharded over ranks under torch.distributed, streamed batch by batch.

The two-rank tests fork two CPU processes (gloo backend, a file:// rendezvous in
tmp_path). Each process first evaluates the whole set alone, then
joins the process group and evaluates its shard; the test checks every rank returns the
single-process numbers and per-image record, that the shards split the images, and that the
rows cross ranks in exactly one gather.
"""

import json
import time
import weakref
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from advlab.attacks.registry import build_attacks
from advlab.evaluation import robustness
from advlab.evaluation.distributed import block, rank_and_world_size, shard
from advlab.evaluation.robustness import evaluate_robustness

EPS = [0.0, 0.01, 0.03]
N_IMAGES = 101  # odd: the two shards differ in size
BATCH = 17  # 101 = 51 + 50 and 51 = 3 * 17: each rank's batches are batches of the whole run


def _setup(n: int = N_IMAGES, dtype=torch.float32):
    """A seeded MLP and random images labelled by it, a quarter of them wrongly (about 75% clean accuracy)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 32), nn.ReLU(), nn.Linear(32, 10)).to(dtype).eval()
    x = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=dtype)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::4] = (y[::4] + 1) % 10
    return model, x, y


def _attacks():
    return build_attacks(["fgsm", {"name": "pgd", "steps": 5}])  # no random start: every run is deterministic


def _scenarios():
    """name -> (model, loader, keyword arguments of evaluate_robustness)."""
    model, x, y = _setup()
    blocks = DataLoader(TensorDataset(x, y), batch_size=BATCH)
    batches = [(x[i:i + 20], y[i:i + 20]) for i in range(0, 100, 20)]
    batches[-1] = (x[80:], y[80:])  # a plain list of 5 batches: split round robin, 3 and 2
    return {
        "blocks_targeted": (model, blocks, {"target": 3}),
        "sequential": (model, blocks, {"per_attack": False}),
        "round_robin": (model, batches, {"target": 3}),
        "one_image": (model, DataLoader(TensorDataset(x[:1], y[:1]), batch_size=BATCH), {}),  # rank 1: nothing
    }


def _worker(rank: int, world_size: int, rendezvous: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    references = {name: evaluate_robustness(m, loader, EPS, _attacks(), progress=False, **kw)
                  for name, (m, loader, kw) in _scenarios().items()}
    reference = {name: r.to_dict() for name, r in references.items()}

    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world_size)
    calls, seen = [], []
    real_gather, real_measure_batch = dist.all_gather_object, robustness._measure_batch
    dist.all_gather_object = lambda *a, **k: calls.append(1) or real_gather(*a, **k)
    robustness._measure_batch = lambda model, x, y, *a: seen.append(len(y)) or real_measure_batch(model, x, y, *a)
    report = {}
    for name, (m, loader, kw) in _scenarios().items():
        calls.clear()
        seen.clear()
        results = evaluate_robustness(m, loader, EPS, _attacks(), progress=False, **kw)
        report[name] = {"reference": reference[name], "distributed": results.to_dict(), "gathers": len(calls),
                        "images_here": sum(seen), "rank": rank_and_world_size(),
                        "same_record": results.per_image == references[name].per_image}
    dist.destroy_process_group()
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(report))


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Forked, not spawned: the children inherit the imported torch and advlab instead of importing them
    again (seconds each); with one thread each, as DataLoader workers run after a fork."""
    tmp = tmp_path_factory.mktemp("ddp")
    context = mp.start_processes(_worker, args=(2, f"file://{tmp}/rendezvous", str(tmp)), nprocs=2, join=False,
                                 start_method="fork")
    deadline = time.monotonic() + 120
    while not context.join(timeout=1):  # raises if a rank failed, with its traceback
        if time.monotonic() > deadline:
            for p in context.processes:
                p.kill()
            pytest.fail("the two ranks did not finish within 120 s")
    return [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["blocks_targeted", "sequential", "round_robin", "one_image"])
def test_every_rank_returns_the_single_process_results(two_ranks, scenario):
    for rank, report in enumerate(two_ranks):
        got = report[scenario]
        assert got["rank"] == [rank, 2]
        assert got["distributed"] == got["reference"], (rank, scenario)
        assert got["same_record"], (rank, scenario)
    n = 1 if scenario == "one_image" else N_IMAGES
    assert two_ranks[0][scenario]["reference"]["n_images"] == n
    # Each image on exactly one rank: the shards add up to the set (and the results match, so none twice).
    assert sum(r[scenario]["images_here"] for r in two_ranks) == n


@pytest.mark.slow
def test_the_work_is_split_and_rows_cross_ranks_once(two_ranks):
    here = {name: [r[name]["images_here"] for r in two_ranks] for name in two_ranks[0]}
    assert here == {"blocks_targeted": [51, 50], "sequential": [51, 50], "round_robin": [61, 40], "one_image": [1, 0]}
    assert all(r[name]["gathers"] == 1 for r in two_ranks for name in r)
    # The scenarios measure something: attacks lower accuracy, and the targeted attack gains with eps.
    res = two_ranks[0]["blocks_targeted"]["reference"]
    worst = [r["successes"] for r in res["robustness"]["accuracy"]["worst_case"]]
    assert worst[0] > worst[1] > worst[2] > 0
    hits = [r["successes"] for r in res["targeted"]["success"]["pgd"]]
    assert hits[0] < hits[1] < hits[2]
    cm = torch.tensor(res["confusion_matrix"]["counts"])
    assert cm.sum() == N_IMAGES and cm.diag().sum() == res["clean"]["successes"]


def test_blocks_cover_every_index_exactly_once():
    for n in range(30):
        for world_size in range(1, 6):
            parts = [block(n, r, world_size) for r in range(world_size)]
            assert [i for p in parts for i in p] == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_shards_of_a_shuffled_loader_are_disjoint_and_complete():
    data = TensorDataset(torch.arange(23), torch.zeros(23, dtype=torch.long))
    loader = DataLoader(data, batch_size=4, shuffle=True)  # each call to shard draws another order
    parts = [shard(loader, r, 3) for r in range(3)]
    seen = [int(i) for p in parts for batch, _ in p for i in batch]
    assert sorted(seen) == list(range(23))
    assert all(p.batch_size == 4 for p in parts)


def test_without_a_process_group_nothing_is_sharded():
    loader = DataLoader(TensorDataset(torch.zeros(3, 1), torch.zeros(3)), batch_size=2)
    assert rank_and_world_size() == (0, 1)
    assert shard(loader, 0, 1) is loader


def test_an_already_sharded_loader_is_refused():
    data = TensorDataset(torch.zeros(5, 1), torch.zeros(5))
    loader = DataLoader(data, batch_size=2, sampler=DistributedSampler(data, num_replicas=2, rank=0))
    with pytest.raises(ValueError, match="loader: already sharded by a DistributedSampler"):
        shard(loader, 0, 2)


def test_labels_outside_the_classes_are_refused():
    model, x, y = _setup(4)
    y[0] = 10
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 9\]"):
        evaluate_robustness(model, [(x, y)], EPS, _attacks(), progress=False)


def test_streams_batches_and_keeps_no_adversarial_images(monkeypatch):
    """A single-use generator of 10 batches gives the numbers of one batch of all 100 images, and when the
    next batch is drawn no adversarial image of the earlier ones is alive. Float64, so that the batch size
    cannot change a prediction through rounding."""
    model, x, y = _setup(100, torch.float64)
    alive = []

    class Tracked:
        """The attack, with a weak reference kept to every image batch it returns."""

        def __init__(self, attack):
            self.attack = attack

        def __call__(self, *args, **kwargs):
            x_adv = self.attack(*args, **kwargs)
            alive.append(weakref.ref(x_adv))
            return x_adv

        def __getattr__(self, name):  # targeted, iterative, ...: as the attack says
            return getattr(self.attack, name)

    monkeypatch.setattr(robustness, "fgsm", Tracked(robustness.fgsm))  # the "perturbed" accuracy's FGSM
    attacks = {name: Tracked(a) for name, a in _attacks().items()}

    def stream():
        for i in range(0, 100, 10):
            assert all(ref() is None for ref in alive), "adversarial images of an earlier batch are still held"
            yield x[i:i + 10], y[i:i + 10]

    streamed = evaluate_robustness(model, stream(), EPS, attacks, target=3, progress=False)
    assert len(alive) > 50  # the attacks did run, batch by batch
    whole = evaluate_robustness(model, [(x, y)], EPS, _attacks(), target=3, progress=False)
    assert streamed.targeted is not None, "the targeted attack was counted"
    assert streamed == whole and streamed.n_images == 100

