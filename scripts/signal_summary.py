"""Summarise the Wi-Fi signal phones see, from the UJIIndoorLoc fingerprint database.

UJIIndoorLoc (Torres-Sospedra et al., IPIN 2014; UCI Machine Learning Repository, dataset 310) holds
21,048 Wi-Fi scans taken with 25 Android phones by about 20 people in three buildings of
Universitat Jaume I: per scan, the RSSI (dBm) of each of 520 access points (100 = not detected),
the place (building, floor, space, position, coordinates), the user, the phone and a timestamp.
In the training file each place was scanned about ten times in a row, about 1 s apart.

This script reads the database's zip (or a folder holding ``trainingData.csv`` and
``validationData.csv``) and writes the summary bundled as
``autoscale_env/data/signal/ujiindoorloc_rssi.csv``, which ``settings.toml`` cites:

* the strongest access point's RSSI per scan (what a phone could associate with; the link it uses
  is at most that strong): percentiles, the share of scans in the world's weak bin (<= -80 dBm)
  and below Android's bad-link threshold (-83 dBm, AOSP-WIFI), and the median of each bin;
* per place (training file, places scanned at least 5 times by one user and phone): the
  serving access point, taken as the one with the highest median RSSI among those seen in every
  scan of the place; the distribution of its median (the mean level of a place: the dynamic
  setting's segment mean);
* its scan-to-scan deviations from that median: fading (standard deviation within +-10 dB) and
  deep drops (a scan at least ``DROP_DB`` below the median): how often one starts per scan, how
  many consecutive scans it lasts, how deep it is; also at 8 and 12 dB, as a range.

Cleaning: exact duplicate rows are dropped (637 in the training file); readings above -20 dBm are
discarded as invalid (2.4 GHz free-space loss at 1 m is 40 dB, so a 20 dBm access point gives
-20 dBm at 1 m; the database's readings above -20 cluster at -18 ... 0 dBm, most from one phone,
PHONEID 19).

Run::

    python scripts/signal_summary.py path/to/UJIndoorLoc.zip \
        --out autoscale_env/data/signal/ujiindoorloc_rssi.csv
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np

MISSING = 100.0
MAX_VALID_DBM = -20.0
WEAK_EDGE_DBM = -80.0      # features.toml: rssi_wifi <= -80 is the weak bin
BAD_LINK_DBM = -83.0       # AOSP-WIFI: config_wifi_framework_wifi_score_bad_rssi_threshold_24GHz
FADING_WINDOW_DB = 10.0
DROP_DB = 10.0
DROP_DB_RANGE = (8.0, 12.0)
MIN_SCANS_PER_PLACE = 5
PLACE_KEYS = ("BUILDINGID", "FLOOR", "SPACEID", "RELATIVEPOSITION", "USERID", "PHONEID",
              "LONGITUDE", "LATITUDE")
PERCENTILES = (1, 2.5, 5, 10, 25, 50, 75, 90, 95, 97.5, 99)
FILES = ("trainingData.csv", "validationData.csv")


def _read(source: Path) -> tuple[dict[str, tuple[list[str], list[list[str]]]], str]:
    """Each file's header and rows (duplicates dropped), and a description of the input."""
    texts: dict[str, str] = {}
    if source.is_dir():
        for name in FILES:
            texts[name] = (source / name).read_text()
        what = f"folder {source}"
    else:
        data = source.read_bytes()
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            for info in z.infolist():
                base = info.filename.rsplit("/", 1)[-1]
                if base in FILES:
                    texts[base] = z.read(info).decode()
        what = f"zip sha256 {hashlib.sha256(data).hexdigest()}"
    out = {}
    for name in FILES:
        rows = list(csv.reader(io.StringIO(texts[name])))
        header, body = rows[0], rows[1:]
        seen, unique = set(), []
        for r in body:
            t = tuple(r)
            if t not in seen:
                seen.add(t)
                unique.append(r)
        out[name] = (header, unique)
    return out, what


def _rssi(header: list[str], rows: list[list[str]]) -> np.ndarray:
    cols = [i for i, c in enumerate(header) if c.startswith("WAP")]
    x = np.array([[float(r[i]) for i in cols] for r in rows])
    x[(x == MISSING) | (x > MAX_VALID_DBM)] = np.nan
    return x


def _strongest(x: np.ndarray) -> np.ndarray:
    seen = ~np.all(np.isnan(x), axis=1)
    return np.max(np.where(np.isnan(x), -np.inf, x), axis=1)[seen]


def _runs(mask: np.ndarray) -> list[int]:
    lengths, run = [], 0
    for m in mask:
        if m:
            run += 1
        elif run:
            lengths.append(run)
            run = 0
    if run:
        lengths.append(run)
    return lengths


def summarise(source: Path) -> tuple[list[tuple[str, str, float, int, str]], str]:
    files, what = _read(source)
    rows: list[tuple[str, str, float, int, str]] = []
    strongest = {}
    for name, (header, body) in files.items():
        strongest[name.removesuffix("Data.csv")] = _strongest(_rssi(header, body))
    strongest["pooled"] = np.concatenate(list(strongest.values()))
    for label, s in strongest.items():
        n = len(s)
        for p in PERCENTILES:
            rows.append(("strongest_ap_dbm", label, float(np.percentile(s, p)), n,
                         f"percentile {p:g} of the strongest access point's RSSI per scan"))
        rows.append(("strongest_ap_dbm", label, float(s.mean()), n, "mean"))
        rows.append(("strongest_ap_dbm", label, float(s.std()), n, "standard deviation (dB)"))
        reg, weak = s[s > WEAK_EDGE_DBM], s[s <= WEAK_EDGE_DBM]
        in_use = weak[weak >= BAD_LINK_DBM]
        rows.append(("strongest_ap_dbm", label, float(np.median(reg)), len(reg),
                     f"median of the scans in the regular bin (> {WEAK_EDGE_DBM:g} dBm)"))
        rows.append(("strongest_ap_dbm", label, float(np.median(in_use)), len(in_use),
                     f"median of the scans in the weak bin that Android still uses "
                     f"({BAD_LINK_DBM:g} ... {WEAK_EDGE_DBM:g} dBm)"))
        rows.append(("share", label, float(np.mean(s <= WEAK_EDGE_DBM)), n,
                     f"share of scans whose strongest access point is <= {WEAK_EDGE_DBM:g} dBm"))
        rows.append(("share", label, float(np.mean(s < BAD_LINK_DBM)), n,
                     f"share of scans whose strongest access point is < {BAD_LINK_DBM:g} dBm"))

    # Places of the training file: the serving access point's level and its scan-to-scan changes.
    header, body = files["trainingData.csv"]
    x = _rssi(header, body)
    key_cols = [header.index(k) for k in PLACE_KEYS]
    t_col = header.index("TIMESTAMP")
    places: dict[tuple[str, ...], list[int]] = {}
    for i, r in enumerate(body):
        places.setdefault(tuple(r[c] for c in key_cols), []).append(i)
    medians, deviations = [], []
    for idx in places.values():
        if len(idx) < MIN_SCANS_PER_PLACE:
            continue
        idx = sorted(idx, key=lambda i: (int(body[i][t_col]), i))
        s = x[idx]
        always = np.all(~np.isnan(s), axis=0)
        if not always.any():
            continue
        med = np.where(always, np.median(np.where(always, s, 0.0), axis=0), -np.inf)
        ap = int(np.argmax(med))
        medians.append(float(med[ap]))
        deviations.append(s[:, ap] - med[ap])
    medians_a = np.array(medians)
    scans = sum(len(d) for d in deviations)
    for p in PERCENTILES:
        rows.append(("place_median_dbm", "training", float(np.percentile(medians_a, p)),
                     len(medians_a), f"percentile {p:g} of a place's serving-AP median RSSI"))
    rows.append(("place_median_dbm", "training", float(medians_a.mean()), len(medians_a), "mean"))
    rows.append(("place_median_dbm", "training", float(medians_a.std()), len(medians_a),
                 "standard deviation (dB)"))
    rows.append(("share", "training", float(np.mean(medians_a <= WEAK_EDGE_DBM)), len(medians_a),
                 f"share of places whose serving-AP median is <= {WEAK_EDGE_DBM:g} dBm"))
    dev = np.concatenate(deviations)
    core = dev[np.abs(dev) < FADING_WINDOW_DB]
    rows.append(("fading_db", "training", float(core.std()), len(core),
                 f"standard deviation of the serving AP's deviation from its place median, "
                 f"within +-{FADING_WINDOW_DB:g} dB"))
    rows.append(("fading_db", "training", float(dev.std()), len(dev),
                 "standard deviation of all deviations (drops included)"))
    for threshold in sorted({DROP_DB, *DROP_DB_RANGE}):
        lengths = [n for d in deviations for n in _runs(d <= -threshold)]
        depth = dev[dev <= -threshold]
        tag = f"a drop: >= {threshold:g} dB below the place median"
        rows.append(("drop_start_rate", "training", len(lengths) / scans, scans,
                     f"{tag}; drops started per scan (scans ~1 s apart)"))
        rows.append(("drop_mean_scans", "training", float(np.mean(lengths)), len(lengths),
                     f"{tag}; mean consecutive scans per drop"))
        rows.append(("drop_depth_db", "training", float(-depth.mean()), len(depth),
                     f"{tag}; mean depth of the scans in a drop (dB)"))
    return rows, what


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path, help="UJIIndoorLoc zip, or the folder with its two CSVs")
    ap.add_argument("--out", type=Path,
                    default=Path("autoscale_env/data/signal/ujiindoorloc_rssi.csv"))
    args = ap.parse_args()
    rows, what = summarise(args.source)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        f.write(
            "# origin: UJIIndoorLoc (J. Torres-Sospedra et al., IPIN 2014), UCI Machine Learning "
            "Repository dataset 310, https://archive.ics.uci.edu/dataset/310/ujiindoorloc; read "
            "from the copy data/ujiindoorloc.zip in github.com/andrejvysny/ujiindoorloc-capstone "
            "@54a38ccc8b28494afa6ce7a2c7ce71db93c3deda (files dated 2014-09-18)\n"
            f"# version: {what}\n"
            "# licence: the database is distributed by the UCI repository under CC BY 4.0; this "
            "file holds derived statistics only, with attribution\n"
            "# table: computed by scripts/signal_summary.py (duplicates dropped; readings above "
            "-20 dBm discarded; places = one user and phone at one position, >= 5 scans)\n")
        w = csv.writer(f, lineterminator="\n")
        w.writerow(("quantity", "set", "value", "n", "definition"))
        for q, s, v, n, d in rows:
            w.writerow((q, s, f"{v:.4g}", n, d))
    for q, s, v, n, d in rows:
        print(f"{q:18s} {s:10s} {v:9.4g} {n:6d}  {d}")


if __name__ == "__main__":
    main()
