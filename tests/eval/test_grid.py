import pytest

import decoptim as d
from decoptim.eval.compare import CONTROLS, control_of, iid_twin_of
from decoptim.eval.grid import (
    PRESETS,
    coord_study,
    demo_grid,
    load_grid_file,
    make_grid,
    paper_table1,
    parse_spec,
)


def test_specs_build_the_named_decoders():
    assert isinstance(parse_spec("topk:k=50").build(0.7), d.TopK)
    bok = parse_spec("bok:k=8,beta=0.02,lam=0.2,solver=mirror").build(0.9)
    assert isinstance(bok, d.BestOfK) and bok.solver == "mirror" and bok.temperature == 0.9
    control = parse_spec("bok-tau:k=8,beta=0.02,lam=0.2").build(0.9)
    assert isinstance(control, d.Softmax) and abs(control.temperature - 0.9 / 6) < 1e-12
    assert parse_spec("bok-beta0:k=8,beta=0.02,lam=0.2").build(0.9).beta == 0.0


@pytest.mark.parametrize(
    "spec,match",
    [
        ("nucleus:p=0.9", "unknown decoder"),
        ("topk:50", "key=value"),
        ("topk:k=0", "k >= 1"),
        ("topp:q=0.9", "unexpected keyword"),
    ],
)
def test_bad_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_spec(spec)


def test_grid_cells_and_presets(tmp_path):
    grid = make_grid(["greedy", "softmax", "topp:p=0.9"], [0.5, 1.0])
    assert [c.id for c in grid.configs()] == [
        "greedy",
        "softmax@0.5",
        "softmax@1",
        "topp(p=0.9)@0.5",
        "topp(p=0.9)@1",
    ]
    paper = paper_table1()
    assert len(paper.decoders) == 2 + 3 * 4 and paper.temperatures == (0.1, 0.25, 0.5, 0.7, 0.9)
    path = tmp_path / "grid.toml"
    path.write_text(
        'temperatures = [0.7]\ndecoders = ["softmax"]\n[[decoder]]\nname = "minp"\np = 0.1\n'
    )
    assert [c.id for c in load_grid_file(path).configs()] == ["softmax@0.7", "minp(p=0.1)@0.7"]
    with pytest.raises(ValueError, match="positive"):
        make_grid(["softmax"], [0.0])


def test_spec_text_reads_back_to_the_same_spec():
    for text in ("softmax", "bok:k=8,beta=0.01,lam=0.1,solver=mirror,steps=5", "topp:p=0.9"):
        spec = parse_spec(text)
        assert spec.text == text and parse_spec(spec.text) == spec


def test_coordination_is_an_axis_with_its_own_ids_and_manifest_entries():
    grid = make_grid(["greedy", "softmax", "topp:p=0.9"], [0.5, 1.0]).with_coordinated(4)
    configs = grid.configs(8)
    assert [c.id for c in configs] == [
        "greedy",  # deterministic: never coordinated
        "softmax@0.5",
        "softmax@1",
        "softmax@0.5+coord(K=4)",
        "softmax@1+coord(K=4)",
        "topp(p=0.9)@0.5",
        "topp(p=0.9)@1",
        "topp(p=0.9)@0.5+coord(K=4)",
        "topp(p=0.9)@1+coord(K=4)",
    ]
    entry = configs[3].manifest_entry()
    assert entry["sampling"] == "coordinated" and entry["group_size"] == 4
    assert entry["decoder"] == {"name": "softmax"} and entry["temperature"] == 0.5
    assert configs[1].manifest_entry()["sampling"] == "iid"
    assert configs[1].manifest_entry()["group_size"] is None
    # the group size defaults to n: one group per problem
    assert make_grid(["softmax"], [1.0]).with_coordinated().configs(6)[1].group_size == 6


@pytest.mark.parametrize("n,group_size", [(8, 3), (4, 8)])
def test_n_must_be_a_multiple_of_the_group_size(n, group_size):
    grid = make_grid(["softmax"], [1.0]).with_coordinated(group_size)
    with pytest.raises(
        ValueError, match=f"n={n} samples per problem must be a multiple of group_size={group_size}"
    ):
        grid.configs(n)


def test_coordinated_by_rejection_is_a_sampling_of_its_own():
    grid = make_grid(["greedy", "topp:p=0.9"], [1.0]).with_coordinated(4)
    configs = grid.with_coordinated(4, "coordinated-rejection").configs(8)
    assert [c.id for c in configs] == [
        "greedy",
        "topp(p=0.9)@1",
        "topp(p=0.9)@1+coord(K=4)",
        "topp(p=0.9)@1+coord(K=4,rejection)",
    ]
    assert [c.by_rejection for c in configs] == [False, False, False, True]
    entry = configs[3].manifest_entry()
    assert entry["sampling"] == "coordinated-rejection" and entry["group_size"] == 4
    assert grid.has_coordinated() and not grid.has_rejection()
    # only top-p and typical draw by rejection: another decoder is named, not skipped
    mixed = make_grid(["topp:p=0.9", "minp:p=0.1"], [0.7], sampling=("coordinated-rejection",))
    with pytest.raises(ValueError, match=r"by_rejection=True needs .* got MinP"):
        mixed.configs(4)
    with pytest.raises(ValueError, match="sampling must be coordinated or coordinated-rejection"):
        grid.with_coordinated(4, "iid")


def test_bad_sampling_and_group_size_are_named():
    with pytest.raises(ValueError, match=r"sampling=\['iid', 'paired'\]"):
        make_grid(["softmax"], [1.0], sampling=("iid", "paired"))
    with pytest.raises(ValueError, match="group_size=0"):
        make_grid(["softmax"], [1.0]).with_coordinated(0)


def test_grid_file_sampling_top_level_and_per_decoder(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text(
        'temperatures = [0.7]\nsampling = ["iid", "coordinated"]\ngroup_size = 2\n'
        'decoders = ["softmax"]\n'
        '[[decoder]]\nname = "minp"\np = 0.1\nsampling = "coordinated"\n'
        '[[decoder]]\nname = "topk"\nk = 5\nsampling = ["iid"]\n'
    )
    assert [c.id for c in load_grid_file(path).configs(4)] == [
        "softmax@0.7",
        "softmax@0.7+coord(K=2)",
        "minp(p=0.1)@0.7+coord(K=2)",
        "topk(k=5)@0.7",
    ]
    path.write_text('decoders = ["greedy", "softmax"]\nsampling = "coordinated"\n')
    assert [c.id for c in load_grid_file(path).configs(2)] == ["greedy", "softmax@1+coord(K=2)"]
    path.write_text('decoders = ["softmax"]\nsampling = "arithmetic"\n')
    with pytest.raises(ValueError, match=r"grid.toml: sampling must be .*'arithmetic'"):
        load_grid_file(path)


def test_demo_grid_holds_coordinated_softmax():
    coordinated = [c for c in demo_grid().configs(8) if c.coordinated]
    assert [(c.spec.name, c.temperature, c.group_size) for c in coordinated] == [
        ("softmax", 0.7, 8),
        ("softmax", 1.5, 8),
    ]
    assert {c.group_size for c in demo_grid(4).configs(8) if c.coordinated} == {4}


PAPER = "bok(k=8,beta=0.02,lam=0.2,solver=mirror,steps=5)"
COVERAGE = "bok(k=8,beta=0.5,lam=0.5,weights=topm,top_m=8,solver=exact)"


def test_coord_study_preset_configs_in_order_of_importance():
    assert PRESETS["coord-study"] is coord_study
    configs = coord_study().configs(16)
    taus = ("0.5", "0.7", "1", "1.3")
    both = ["softmax", "topp(p=0.95)", "minp(p=0.05)", PAPER, COVERAGE]
    controls = [
        "bok-tau(k=8,beta=0.02,lam=0.2)",
        "bok-beta0(k=8,beta=0.02,lam=0.2,solver=mirror,steps=5)",
        "bok-tau(k=8,beta=0.5,lam=0.5)",
        "bok-beta0(k=8,beta=0.5,lam=0.5,weights=topm,top_m=8,solver=exact)",
    ]
    expected = []
    for label in both:  # i.i.d. at every τ, then coordinated at every τ
        expected += [f"{label}@{t}" for t in taus] + [f"{label}@{t}+coord(K=16)" for t in taus]
    for label in controls:
        expected += [f"{label}@{t}" for t in taus]
    assert [c.id for c in configs] == expected and len(configs) == 4 * (5 * 2 + 4) == 56
    assert len({c.id for c in configs}) == 56
    coordinated = [c for c in configs if c.coordinated]
    assert {c.spec.label for c in coordinated} == set(both) and len(coordinated) == 20
    assert {c.group_size for c in coordinated} == {16}  # default: n, one group per problem
    assert {c.group_size for c in coord_study(8).configs(16) if c.coordinated} == {8}
    paper = next(c for c in configs if c.spec.label == PAPER).spec.build(0.7)
    assert (paper.k, paper.beta, paper.lam, paper.solver, paper.steps) == (
        8,
        0.02,
        0.2,
        "mirror",
        5,
    )
    coverage = next(c for c in configs if c.spec.label == COVERAGE).spec.build(0.7)
    assert (coverage.beta, coverage.lam, coverage.weights, coverage.top_m) == (0.5, 0.5, "topm", 8)
    assert coverage.solver == "exact"


def test_coord_study_controls_and_twins_pair_up_in_compare():
    entries = [c.manifest_entry() for c in coord_study().configs(16)]
    boks = [e for e in entries if e["decoder"]["name"] == "bok"]
    assert len(boks) == 2 * 4 * 2  # two BoKs, four τ, both samplings
    for bok in boks:
        matched = {
            control: [e["id"] for e in entries if control_of(bok, e, control)]
            for control in CONTROLS
        }
        # every control exactly once; the β = 0 and τ_eff ones are i.i.d. only
        coordinated = bok["sampling"] == "coordinated"
        assert len(matched["softmax"]) == 1
        assert [len(matched[c]) for c in ("β=0", "τ_eff")] == ([0, 0] if coordinated else [1, 1])
        if not coordinated:
            tau = f"@{bok['temperature']:g}"
            lam = bok["decoder"]["lam"]
            assert (
                matched["τ_eff"][0].startswith("bok-tau(")
                and f"lam={lam})" + tau in (matched["τ_eff"][0])
            )
            assert matched["β=0"][0] == bok["id"].replace("bok(", "bok-beta0(")
    for coordinated in (e for e in entries if e["sampling"] == "coordinated"):
        twins = [e["id"] for e in entries if iid_twin_of(coordinated, e)]
        assert twins == [coordinated["id"].removesuffix("+coord(K=16)")]
