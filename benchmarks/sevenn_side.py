"""The SevenNet (PyTorch) side of the benchmarks: its ASE calculator, its Trainer, ASE MD.

Only imported when ``sevenn`` and ``torch`` are installed (``pip install -e .[bench]``; torch
must be the CPU build). SevenNet-0's checkpoint ships in the sevenn package ('7net-0').
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Any


from benchmarks.common import CUTOFF, ase_efs_caller, interleave


def available() -> tuple[bool, str]:
    """(True, version) when sevenn + torch import, else (False, why)."""
    try:
        import sevenn
        import torch
    except Exception as exc:  # noqa: BLE001 - any import failure means "skip the sevenn columns"
        return False, f"sevenn/torch not importable ({type(exc).__name__}: {exc}); pip install -e '.[bench]'"
    version = getattr(sevenn, "__version__", "?")
    return True, f"sevenn {version}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def choose_torch_threads(call, setting: str) -> dict:
    """torch intra-op threads for sevenn: a fixed number, or 'auto' = the faster of 1 and 2.

    On a shared 2-core machine torch's OpenMP pool collapses when another process holds a core
    (10x slower seen here), while 1 thread degrades gracefully; 'auto' gives sevenn its best.
    """
    import torch

    if setting != "auto":
        torch.set_num_threads(int(setting))
        return {"torch_threads": int(setting), "probe": None}
    probe = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        call()
        probe[threads] = interleave({"c": call}, 2)["c"].median
    best = min(probe, key=probe.get)
    torch.set_num_threads(best)
    return {"torch_threads": best, "probe_s_per_call": probe}


def _quiet():
    warnings.filterwarnings("ignore", module="sevenn")
    warnings.filterwarnings("ignore", message=".*accelerat.*")


def calculator():
    """SevenNet-0's ASE calculator on the CPU."""
    _quiet()
    from sevenn.calculator import SevenNetCalculator

    return SevenNetCalculator("7net-0", device="cpu")


def count_params(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
SMALL_OVERRIDES = {
    # mfjax's `small` preset (mfjax/presets/small.yaml) in SevenNet's config keys
    "channel": 32,
    "num_convolution_layer": 3,
    "irreps_manual": ["32x0e", "32x0e+16x1e+8x2e", "32x0e+16x1e+8x2e", "32x0e"],
    "weight_nn_hidden_neurons": [32, 32],
}


@dataclass
class TrainingCase:
    n_structures: int
    batch_size: int
    epoch: Any  # () -> None
    n_params: int


def training_case(preset: str, frames, batch_size: int) -> TrainingCase:
    """SevenNet's own ``Trainer`` (Adam, Huber loss on E/F/S with SevenNet-0's weights 1:1:0.01)
    over ``frames`` (ase.Atoms with labels), SevenNet-0's architecture or mfjax's `small` one."""
    _quiet()
    from torch_geometric.loader import DataLoader

    from sevenn.atom_graph_data import AtomGraphData
    from sevenn.model_build import build_E3_equivariant_model
    from sevenn.train.dataload import atoms_to_graph
    from sevenn.train.trainer import Trainer

    args, _, _ = Trainer.args_from_checkpoint("7net-0")
    if preset == "small":
        from sevenn.util import load_checkpoint

        config = copy.deepcopy(load_checkpoint("7net-0").config)
        config.update(copy.deepcopy(SMALL_OVERRIDES))
        n_layers = SMALL_OVERRIDES["num_convolution_layer"]
        config["avg_num_neigh"] = [28.0] * n_layers
        config["device"] = "cpu"
        args["model"] = build_E3_equivariant_model(config)
    elif preset != "sevennet-0":
        raise ValueError(f"no sevenn counterpart for preset {preset!r}")
    trainer = Trainer(
        args["model"], args["loss_functions"], args["optimizer_cls"], args["optimizer_args"], device="cpu"
    )
    graphs = [AtomGraphData.from_numpy_dict(atoms_to_graph(a, CUTOFF, y_from_calc=True)) for a in frames]
    loader = DataLoader(graphs, batch_size=batch_size, shuffle=True)

    def epoch():
        trainer.run_one_epoch(loader, is_train=True)

    return TrainingCase(len(graphs), batch_size, epoch, count_params(trainer.model))


# ---------------------------------------------------------------------------------------------
# many small structures
# ---------------------------------------------------------------------------------------------
def batched_model():
    """SevenNet-0 set up as ``sevenn inference`` does it: batched graphs, eval mode (forces and
    stress from the autograd of the energy)."""
    _quiet()
    from sevenn import util

    model, _ = util.model_from_checkpoint(util.pretrained_name_to_path("7net-0"))
    model.set_is_batch_data(True)
    model.eval()
    return model


def batched_caller(model, frames, batch_size: int):
    """One pass of SevenNet's batched inference over ``frames`` (ase.Atoms, unlabelled), the way
    ``sevenn.scripts.inference`` runs it: graphs from ``atoms_to_graph`` (its matscipy neighbour
    list), a torch_geometric ``DataLoader``, the model on each batch, results split per structure
    (``util.to_atom_graph_list``). Graph building is inside the call, as mfjax's is."""
    _quiet()
    from torch_geometric.loader import DataLoader

    from sevenn import util
    from sevenn.atom_graph_data import AtomGraphData
    from sevenn.train.dataload import atoms_to_graph

    cutoff = float(model.cutoff)

    def call():
        graphs = [
            AtomGraphData.from_numpy_dict(atoms_to_graph(a, cutoff, transfer_info=False, y_from_calc=True, allow_unlabeled=True))
            for a in frames
        ]
        results = []
        for batch in DataLoader(graphs, batch_size, shuffle=False):
            results.extend(util.to_atom_graph_list(model(batch).detach()))
        assert len(results) == len(frames)

    return call


def ase_caller(atoms, calc):
    """Nudge positions, ask E, F, S (the same call as the mfjax side)."""
    atoms = atoms.copy()
    atoms.calc = calc
    atoms.get_forces()
    return ase_efs_caller(atoms), atoms


def num_edges(calc) -> int:
    return int(calc.results.get("num_edges", -1))


