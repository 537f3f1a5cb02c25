"""CO2eq equivalents: arithmetic hand-computed here, factors and sources as published."""

from __future__ import annotations

import math

import pytest

from carbon_callbacks.core.equivalents import (
    Equivalent,
    all_equivalents,
    km_by_car,
    miles_by_us_car,
    smartphone_charges,
    tree_seedlings_10y,
)


def test_km_by_default_car_is_eea_2024_wltp():
    car = km_by_car(1068.0)  # 1068 g / 106.8 g/km = 10 km
    assert car.value == pytest.approx(10.0)
    assert car.unit == "km"
    assert car.factor == 106.8
    assert "EEA" in car.source and "2024" in car.source
    assert "WLTP" in car.source and "provisional" in car.source


def test_km_by_car_2018_nedc_as_in_carbontracker():
    car = km_by_car(602.0, basis="eea_2018_nedc")  # 602 / 120.4 = 5 km
    assert car.value == pytest.approx(5.0)
    assert car.factor == 120.4
    assert "2018" in car.source and "NEDC" in car.source and "carbontracker" in car.source


def test_km_by_us_vehicle_converts_miles():
    # 3.93e-4 t/mile = 393 g/mile; 393 g is one mile = 1.609344 km
    car = km_by_car(393.0, basis="epa_us_vehicle")
    assert car.value == pytest.approx(1.609344)
    assert car.factor == pytest.approx(393.0 / 1.609344)
    assert "EPA" in car.source


def test_miles_by_us_car():
    miles = miles_by_us_car(786.0)  # 786 / 393 = 2 miles
    assert miles.value == pytest.approx(2.0)
    assert miles.factor == pytest.approx(393.0)
    assert miles.unit == "miles"


def test_smartphone_charges():
    phone = smartphone_charges(124.0)  # 1.24e-5 t = 12.4 g per charge
    assert phone.value == pytest.approx(10.0)
    assert phone.factor == pytest.approx(12.4)
    assert "EPA" in phone.source and "1.24e-5" in phone.source


def test_tree_seedlings_10y():
    trees = tree_seedlings_10y(90_000.0)  # 0.060 t = 60,000 g per seedling
    assert trees.value == pytest.approx(1.5)
    assert trees.factor == pytest.approx(60_000.0)
    assert "10 years" in trees.unit and "0.060" in trees.source


def test_zero_grams_is_zero_of_everything():
    assert all(e.value == 0.0 for e in all_equivalents(0.0))


def test_all_equivalents_set_and_basis():
    items = all_equivalents(1204.0, car_basis="eea_2018_nedc")
    units = [e.unit for e in items]
    assert units == ["km", "smartphone charges", "tree seedlings grown for 10 years"]
    assert items[0].value == pytest.approx(10.0)
    assert all(isinstance(e, Equivalent) for e in items)


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_bad_amounts_are_refused(bad):
    for convert in (km_by_car, smartphone_charges, tree_seedlings_10y, miles_by_us_car):
        with pytest.raises(ValueError, match="co2_g"):
            convert(bad)


def test_unknown_car_basis_lists_the_valid_ones():
    with pytest.raises(ValueError, match="eea_2018_nedc"):
        km_by_car(1.0, basis="eea_2030")


def test_describe_and_to_dict():
    car = km_by_car(1068.0)
    assert car.describe().startswith("10 km (106.8 g per km; EEA")
    expected = {"value": car.value, "unit": "km", "factor": 106.8, "source": car.source}
    assert car.to_dict() == expected
    assert "12.4 g per charge" in smartphone_charges(12.4).describe()
