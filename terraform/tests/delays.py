"""The built-in one-way delay table of terraform/examples/local (delays.tf),
generated from the city table the lab uses (topology/src/geo.rs): the
great-circle distance over fiber (200 km per ms) times the median inflation
of published inter-region RTTs (1.6, topology's DEFAULT_INFLATION), rounded
to 0.1 ms. Terraform has no trigonometric functions, so the example carries
the table rather than the formula.

    python terraform/tests/delays.py          # rewrite the table in delays.tf
    python terraform/tests/delays.py --check  # exit 1 when it is stale (the tests do this)
"""

import itertools
import math
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TF_ROOT = os.path.dirname(HERE)
REPO = os.path.dirname(TF_ROOT)
DELAYS_TF = os.path.join(TF_ROOT, "examples", "local", "delays.tf")
GEO_RS = os.path.join(REPO, "topology", "src", "geo.rs")

# Cities in the table: the lab's big exchange points on every continent.
CITIES = ["lhr", "ams", "fra", "cdg", "iad", "jfk", "ord", "sjc", "gru", "bom", "sin", "nrt", "syd"]
BEGIN, END = "    # BEGIN GENERATED", "    # END GENERATED"


def geo_constants():
    text = open(GEO_RS).read()
    num = lambda name: float(re.search(rf"pub const {name}: f64 = ([0-9.]+);", text).group(1))  # noqa: E731
    cities = {}
    for m in re.finditer(r'\("([^"]+)", "([a-z]{3})", "[A-Z]{2}", "[a-z-]+", (-?[0-9.]+), (-?[0-9.]+)\)', text):
        cities[m.group(2)] = (float(m.group(3)), float(m.group(4)))
    return num("EARTH_RADIUS_KM"), num("FIBER_KM_PER_MS"), num("DEFAULT_INFLATION"), cities


def great_circle_km(radius, a, b):
    # The haversine formula, as topology::geo::great_circle_km.
    lat1, lat2 = math.radians(a[0]), math.radians(b[0])
    dlat, dlon = lat2 - lat1, math.radians(b[1] - a[1])
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlon / 2) ** 2
    return 2 * radius * math.asin(min(1.0, math.sqrt(h)))


def table():
    radius, km_per_ms, inflation, cities = geo_constants()
    out = {}
    for a, b in itertools.combinations(CITIES, 2):
        a, b = sorted([a, b])
        km = great_circle_km(radius, cities[a], cities[b])
        out[f"{a}-{b}"] = round(km / km_per_ms * inflation, 1)
    return out


def render():
    rows = table()
    width = max(len(k) for k in rows) + 2
    lines = [BEGIN + " by terraform/tests/delays.py: do not edit by hand"]
    for k in sorted(rows):
        lines.append(f'    {f"{chr(34)}{k}{chr(34)}":<{width}} = {rows[k]}')
    lines.append(END)
    text = open(DELAYS_TF).read()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + "\n".join(lines) + text[end:]


def main():
    new = render()
    if "--check" in sys.argv:
        if new != open(DELAYS_TF).read():
            print(f"{DELAYS_TF} is stale: run python terraform/tests/delays.py")
            return 1
        return 0
    with open(DELAYS_TF, "w") as f:
        f.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
