"""Model soups and WiSE-FT on hand-made state dicts with known answers."""

import pytest
import torch

from transferkit.common import greedy_soup, uniform_soup, wise_ft


def _sd(v):
    return {"w": torch.full((2,), float(v)), "steps": torch.tensor(7)}


def test_uniform_soup_is_the_mean_and_keeps_integer_buffers():
    soup = uniform_soup([_sd(1), _sd(2), _sd(6)])
    assert torch.allclose(soup["w"], torch.full((2,), 3.0))
    assert soup["steps"].item() == 7 and soup["steps"].dtype == torch.int64


def test_greedy_soup_keeps_only_ingredients_that_help():
    # Held-out score peaks at w = 2: ingredients 1 and 3 average to 2, ingredient 10 would hurt.
    score = lambda sd: -abs(sd["w"][0].item() - 2.0)  # noqa: E731
    soup, chosen = greedy_soup([_sd(10), _sd(1), _sd(3)], score)
    assert sorted(chosen) == [1, 2]
    assert soup["w"][0].item() == pytest.approx(2.0)


def test_wise_ft_interpolates_and_checks_alpha():
    assert wise_ft(_sd(0), _sd(4), 0.25)["w"][0].item() == pytest.approx(1.0)
    assert torch.equal(wise_ft(_sd(0), _sd(4), 1.0)["w"], _sd(4)["w"])
    with pytest.raises(ValueError, match="alpha"):
        wise_ft(_sd(0), _sd(1), 1.5)


def test_soup_of_different_architectures_is_refused():
    with pytest.raises(ValueError, match="different keys"):
        uniform_soup([_sd(1), {"v": torch.zeros(2), "steps": torch.tensor(1)}])
