import pytest

import decoptim as d
from decoptim.eval.grid import load_grid_file, make_grid, paper_table1, parse_spec


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
    assert [c[0] for c in grid.configs()] == [
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
    assert [c[0] for c in load_grid_file(path).configs()] == ["softmax@0.7", "minp(p=0.1)@0.7"]
    with pytest.raises(ValueError, match="positive"):
        make_grid(["softmax"], [0.0])


def test_spec_text_reads_back_to_the_same_spec():
    for text in ("softmax", "bok:k=8,beta=0.01,lam=0.1,solver=mirror,steps=5", "topp:p=0.9"):
        spec = parse_spec(text)
        assert spec.text == text and parse_spec(spec.text) == spec
