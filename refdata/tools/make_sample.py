#!/usr/bin/env python3
"""Writes the SAMPLE reference data of sus-cluster.

    SAMPLE PRICES - NOT THE NHS PAYMENT SCHEME.

Every price, trim point, MFF value, HRG mapping and organisation written here is synthetic. Codes look
like ODS / HRG codes but are not a copy of any register or of the NHS Payment Scheme workbook. Do not use
these figures for payment.

Usage (from the repository root; Python 3 standard library only, deterministic: fixed seed):

    python3 refdata/tools/make_sample.py [--out refdata]

Writes organisations/*.csv, codes/restricted_codes.csv and the seven files of 2023-24/ and 2024-25/
(layout and column names: refdata/README.md). 2024-25 prices are about 3% above 2023-24.
"""

import argparse
import csv
import io
import os
import random
from decimal import ROUND_HALF_EVEN, Decimal

SEED = 20240401
YEARS = ["2023-24", "2024-25"]
UPLIFT = {"2023-24": Decimal("1.000"), "2024-25": Decimal("1.030")}

PLACES = [
    "Aldbury", "Ashcombe", "Barnford", "Bexley Vale", "Blackmoor", "Bramhope", "Brightwell",
    "Burnside", "Calderbridge", "Carnforth", "Castleton", "Chalkdown", "Charnwood", "Claymere",
    "Coldharbour", "Crowthorne", "Dalebrook", "Deepdene", "Dunmore", "Eastwick", "Eldermere",
    "Elmstead", "Fairhaven", "Fenwick", "Fernleigh", "Foxhollow", "Glenridding", "Greystoke",
    "Hartwell", "Hazelmere", "Highcliffe", "Holloway", "Ivybridge", "Kingsmead", "Kirkby Moor",
    "Langley", "Larkhill", "Leaford", "Linthorpe", "Longridge", "Lowther", "Marshfield",
    "Meadowbank", "Millbrook", "Moorgate", "Netherby", "Newlands", "Northcote", "Oakridge",
    "Oldcastle", "Otterburn", "Pendle", "Pinewood", "Queensbury", "Radleigh", "Ravenscar",
    "Redbridge Vale", "Ridgeway", "Riverside", "Rosedale", "Rushmere", "Saltash", "Sandford",
    "Seacombe", "Shepley", "Silverdale", "Southmoor", "Stanwick", "Stonebridge", "Summerfield",
    "Swanmore", "Thornbury", "Torbeck", "Upton Lea", "Wadebridge", "Waterloo Vale", "Westcliff",
    "Whitmore", "Wildwood", "Willowbrook", "Windermere Vale", "Woodhall", "Wrenfield", "Yarrow",
]

# Treatment function codes (real code numbers, synthetic prices). Mental health ones have no
# national price (blank), so outpatient activity there is excluded.
TFCS = [
    ("100", "General surgery"), ("101", "Urology"), ("103", "Breast surgery"),
    ("104", "Colorectal surgery"), ("106", "Upper gastrointestinal surgery"),
    ("107", "Vascular surgery"), ("110", "Trauma and orthopaedics"),
    ("120", "Ear nose and throat"), ("130", "Ophthalmology"), ("140", "Oral surgery"),
    ("141", "Restorative dentistry"), ("143", "Orthodontics"), ("144", "Maxillofacial surgery"),
    ("150", "Neurosurgery"), ("160", "Plastic surgery"), ("170", "Cardiothoracic surgery"),
    ("171", "Paediatric surgery"), ("172", "Cardiac surgery"), ("173", "Thoracic surgery"),
    ("191", "Pain management"), ("300", "General internal medicine"),
    ("301", "Gastroenterology"), ("302", "Endocrinology"), ("303", "Clinical haematology"),
    ("306", "Hepatology"), ("307", "Diabetes"), ("311", "Clinical genetics"),
    ("314", "Rehabilitation"), ("315", "Palliative medicine"), ("316", "Clinical immunology"),
    ("317", "Allergy"), ("320", "Cardiology"), ("321", "Paediatric cardiology"),
    ("324", "Anticoagulant service"), ("326", "Acute internal medicine"),
    ("328", "Stroke medicine"), ("329", "Transient ischaemic attack"), ("330", "Dermatology"),
    ("340", "Respiratory medicine"), ("350", "Infectious diseases"),
    ("360", "Genitourinary medicine"), ("361", "Nephrology"), ("370", "Medical oncology"),
    ("400", "Neurology"), ("401", "Clinical neurophysiology"), ("410", "Rheumatology"),
    ("420", "Paediatrics"), ("430", "Elderly medicine"), ("502", "Gynaecology"),
    ("503", "Gynaecological oncology"), ("501", "Obstetrics"), ("560", "Midwifery"),
    ("650", "Physiotherapy"), ("651", "Occupational therapy"),
    ("652", "Speech and language therapy"), ("653", "Podiatry"), ("654", "Dietetics"),
    ("655", "Orthoptics"), ("710", "Adult mental illness"),
    ("711", "Child and adolescent psychiatry"), ("800", "Clinical oncology"),
]
TFC_UNPRICED = {"710", "711", "560"}

# HRG chapters: (two-letter chapter, description, OPCS-4 chapter letters, ICD-10 chapter letters).
CHAPTERS = [
    ("AA", "Nervous system", "A", "G"),
    ("BZ", "Eyes and periorbita", "C", "H"),
    ("CA", "Ear nose and throat", "D", ""),
    ("CD", "Mouth head and neck", "F", "K"),
    ("DZ", "Respiratory system", "E", "J"),
    ("EB", "Cardiac", "K", "I"),
    ("FD", "Digestive system", "GH", "K"),
    ("GA", "Hepatobiliary and pancreas", "J", "K"),
    ("HN", "Musculoskeletal", "VW", "M"),
    ("JA", "Skin and breast", "S", "L"),
    ("JC", "Soft tissue", "T", ""),
    ("KA", "Endocrine and metabolic", "B", "E"),
    ("LA", "Urinary tract", "M", "N"),
    ("LB", "Male reproductive", "N", ""),
    ("MA", "Female reproductive", "PQ", "N"),
    ("NZ", "Obstetrics", "R", "O"),
    ("SA", "Haematology and infection", "X", "D"),
    ("WH", "Injury and poisoning", "Z", "ST"),
    ("YQ", "Vascular", "L", ""),
    ("WJ", "Other and symptoms", "Y", "RZ"),
]
ICD_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
OPCS_LETTERS = "ABCDEFGHJKLMNPQRSTVWXYZ"  # no I or U
# Which HRG chapter takes the catch-all for a letter that no chapter above lists.
ICD_CATCHALL_EXTRA = {"A": "SA", "B": "SA", "C": "SA", "F": "WJ", "P": "NZ", "Q": "WJ",
                      "U": "WJ", "V": "WH", "W": "WH", "X": "WH", "Y": "WH"}

RESTRICTED = [
    ("ICD10", "N97", "FERTILISATION"),
    ("ICD10", "Z31", "FERTILISATION"),
    ("OPCS4", "Q13", "FERTILISATION"),
    ("OPCS4", "Q38", "FERTILISATION"),
    ("ICD10", "F64", "GENDER_RECOGNITION"),
]

EC_INVESTIGATIONS = [  # (SNOMED CT id, category) - codes are real-looking, categories ours
    ("252167001", 1), ("168537006", 1), ("27171005", 1), ("167217005", 1), ("104686004", 1),
    ("67900009", 1), ("53115007", 1), ("171207006", 1), ("26604007", 2), ("271236005", 2),
    ("104485008", 2), ("75367002", 2), ("313440008", 2), ("396550006", 2), ("46650003", 2),
    ("412852005", 2), ("77477000", 3), ("113091000", 3), ("16310003", 3), ("40701008", 3),
    ("429858000", 3), ("241615005", 3),
]
EC_TREATMENTS = [
    ("183948003", 1), ("413334001", 1), ("225358003", 1), ("182531007", 1), ("266712008", 1),
    ("385968004", 2), ("225113003", 2), ("14768001", 2), ("18629005", 2), ("225707009", 2),
    ("52765003", 3), ("116859006", 3), ("432102000", 3), ("274474001", 3), ("179344006", 3),
    ("89666000", 4), ("232674004", 4), ("40617009", 4), ("71388002", 4),
]

APC_HEADER = [
    "HRG code", "HRG name", "Outpatient procedure tariff (£)",
    "Combined day case / ordinary elective spell tariff (£)", "Day case spell tariff (£)",
    "Ordinary elective spell tariff (£)", "Ordinary elective long stay trim point (days)",
    "Non-elective spell tariff (£)", "Non-elective long stay trim point (days)",
    "Per day long stay payment (for days exceeding trim point) (£)",
    "Reduced short stay emergency tariff _applicable?",
    "% applied in calculation of reduced short stay emergency tariff",
    "Reduced short stay emergency tariff (£)",
]


def write_csv(path, header, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow(r)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(buf.getvalue())


def unique_code(rng, used, make):
    while True:
        c = make(rng)
        if c not in used:
            used.add(c)
            return c


def alnum(rng):
    return rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789")


def organisations(rng, out):
    used = set()
    # ICBs (Q..) and their sub-ICB locations (5 characters).
    icbs = [unique_code(rng, used, lambda r: "Q" + r.choice("ABCDEFGHJKLMNOPRSTUVWXY") +
                        r.choice("ABCDEFGHJKLMNOPRSTUVWXY")) for _ in range(42)]
    commissioners = []
    per_icb = [4] * 42
    for i in range(200 - 4 * 42):
        per_icb[i % 42] += 1
    place_i = 0
    for icb, n in zip(icbs, per_icb):
        for _ in range(n):
            if rng.random() < 0.5:
                code = unique_code(rng, used, lambda r: "%02d%s00" % (r.randint(0, 99), r.choice(
                    "ABCDEFGHJKLMNPQRSTUVWXYZ")))
            else:
                code = unique_code(rng, used, lambda r: r.choice("ABDEFMX") + str(r.randint(1, 9))
                                   + alnum(r) + str(r.randint(1, 9)) + r.choice("ABCDEFGHJKLMNPQRSTUVWXYZ"))
            commissioners.append((code, "%s sub-ICB location" % PLACES[place_i % len(PLACES)], icb))
            place_i += 1
    write_csv(os.path.join(out, "organisations/commissioners.csv"),
              ["org_code", "org_name", "icb_code"], commissioners)

    # GP practices: letter + 5 digits, grouped by commissioner (file order = locality).
    practices = []
    gp_used = {"V81997", "V81998", "V81999"}
    for ci, (ccode, _, _) in enumerate(commissioners):
        letter = "ABCDEFGHJKLMNPY"[ci % 15]
        for k in range(15):
            code = unique_code(rng, gp_used, lambda r: letter + "%05d" % r.randint(81000, 99999))
            practices.append((code, "%s practice %d" % (PLACES[ci % len(PLACES)], k + 1), ccode))
    write_csv(os.path.join(out, "organisations/gp_practices.csv"),
              ["org_code", "org_name", "commissioner_code"], practices)

    # Providers: 132 NHS trusts (R + 2) and 18 independent providers (5 characters).
    providers = []
    for i in range(132):
        code = unique_code(rng, used, lambda r: "R" + r.choice("ABCDEFGHJKLMNPQRTVWXY") + alnum(r))
        kind = rng.choice(["Hospitals NHS Foundation Trust", "Hospitals NHS Trust",
                           "University Hospitals NHS Foundation Trust", "Healthcare NHS Trust"])
        providers.append((code, "%s %s" % (PLACES[i % len(PLACES)], kind), "NHS trust"))
    for i in range(18):
        code = unique_code(rng, used, lambda r: r.choice(["NT", "NV", "8H", "NP"]) + alnum(r) +
                           "%02d" % r.randint(1, 99))
        providers.append((code, "%s Independent Hospital" % PLACES[(i * 7) % len(PLACES)],
                          "Independent"))
    write_csv(os.path.join(out, "organisations/providers.csv"),
              ["org_code", "org_name", "org_type"], providers)

    # Senders: submitting agencies SA001..SA005, each for several providers.
    senders = []
    codes = [p[0] for p in providers]
    for a in range(1, 6):
        for p in sorted(rng.sample(codes, rng.randint(4, 9))):
            senders.append(("SA%03d" % a, p))
    senders = sorted(set(senders))
    write_csv(os.path.join(out, "organisations/senders.csv"),
              ["sender_code", "provider_code"], senders)
    return providers


def pounds(value, rng, fancy):
    """A price in pounds as the workbook prints it: plain, or with £ and thousands separators."""
    v = Decimal(value).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
    if fancy:
        return "£{:,.2f}".format(v)
    if v == v.to_integral_value():
        return str(int(v))
    return str(v)


def hrg_catalogue(rng):
    """The HRG list with base (2023-24) prices and the grouper rules (shared by both years)."""
    hrgs = []   # dicts
    rules = []  # (setting, code_type, prefix, hrg, cc_split)
    used = {("APC", "OPCS4"): set(), ("APC", "ICD10"): set(), ("OP", "OPCS4"): set()}

    def add_rule(setting, ctype, prefix, hrg, split):
        key = (setting, ctype)
        if prefix in used[key]:
            return False
        used[key].add(prefix)
        rules.append((setting, ctype, prefix, hrg, "Y" if split else "N"))
        return True

    def price_row(code, name, kind, scale, seed=None):
        # kind: "surgical" (procedure) or "medical" (diagnosis). The CC bands of one root share a
        # seed so that they differ only by `scale` (3+ dearer than 1-2, dearer than none).
        rng = random.Random(seed) if seed is not None else outer
        r = {"code": code, "name": name}
        if kind == "surgical":
            el = Decimal(rng.randint(1500, 12000)) * scale
            r["el"] = el
            r["dc"] = (el * Decimal(rng.choice(["0.55", "0.6", "0.7", "0.8"]))) if rng.random() < 0.7 else None
            r["combined"] = el * Decimal("0.85")
            r["el_trim"] = rng.randint(2, 25)
            r["nel"] = el * Decimal(rng.choice(["1.1", "1.2", "1.35", "1.5"]))
            r["nel_trim"] = rng.randint(5, 45)
        else:
            nel = Decimal(rng.randint(600, 7000)) * scale
            r["nel"] = nel
            r["nel_trim"] = rng.randint(3, 40)
            r["combined"] = nel * Decimal(rng.choice(["0.5", "0.6", "0.75"]))
            r["dc"] = r["combined"] * Decimal("0.8") if rng.random() < 0.4 else None
            r["el"] = None if rng.random() < 0.6 else r["combined"] * Decimal("1.1")
            r["el_trim"] = rng.randint(2, 15)
        r["per_day"] = Decimal(rng.randint(200, 450)) + Decimal(rng.choice([0, 0, 0.5, 0.25]))
        if rng.random() < 0.45:
            pct = rng.choice([20, 25, 30, 40, 50, 60])
            r["ssem"] = ("Yes", pct, r["nel"] * Decimal(pct) / 100)
        else:
            r["ssem"] = ("No", None, None)
        r["op_proc"] = None
        # pence-level noise so that prices are not all round pounds
        for k in ("el", "dc", "combined", "nel"):
            if r.get(k) is not None and rng.random() < 0.3:
                r[k] = r[k] + Decimal(rng.randint(1, 99)) / 100
        return r

    outer = rng
    proc_counter = 0
    for chapter, desc, opcs, icd in CHAPTERS:
        # surgical roots: CC split, mapped from procedure prefixes
        for j in range(rng.randint(3, 5)):
            root = "%s%02d" % (chapter, 10 + j * 3)
            scale = Decimal(1 + j) / Decimal(2)
            seed = rng.random()
            for band, name_band, mult in (("A", "with CC score 3+", "1.35"),
                                          ("B", "with CC score 1-2", "1.15"),
                                          ("C", "without CC", "1.0")):
                row = price_row(root + band, "%s procedure %d, %s" % (desc, j + 1, name_band),
                                "surgical", scale * Decimal(mult), seed)
                hrgs.append(row)
            letter = opcs[j % len(opcs)] if opcs else "X"
            for _ in range(rng.randint(2, 4)):
                n = rng.randint(2, 4)
                prefix = letter + "".join(str(rng.randint(0, 9)) for _ in range(n - 1))
                add_rule("APC", "OPCS4", prefix, root, True)
            proc_counter += 1
        # medical roots from diagnosis prefixes
        for j in range(rng.randint(2, 4) if icd else 0):
            root = "%s%02d" % (chapter, 40 + j * 3)
            seed = rng.random()
            for band, name_band, mult in (("A", "with CC score 3+", "1.4"),
                                          ("B", "with CC score 1-2", "1.15"),
                                          ("C", "without CC", "1.0")):
                hrgs.append(price_row(root + band, "%s disorder %d, %s" % (desc, j + 1, name_band),
                                      "medical", Decimal(mult), seed))
            letter = icd[j % len(icd)]
            for _ in range(rng.randint(2, 5)):
                n = rng.randint(2, 4)
                tail = "".join(str(rng.randint(0, 9)) for _ in range(n - 1))
                add_rule("APC", "ICD10", letter + tail, root, True)
        # unsplit medical HRGs (Z)
        for j in range(rng.randint(1, 3) if icd else 0):
            code = "%s%02dZ" % (chapter, 70 + j)
            hrgs.append(price_row(code, "%s other %d" % (desc, j + 1), "medical", Decimal(1)))
            letter = icd[j % len(icd)]
            for _ in range(rng.randint(1, 3)):
                add_rule("APC", "ICD10", letter + "%02d" % rng.randint(0, 99), code, False)
        # minor procedures: unsplit, with an outpatient procedure tariff for most
        for j in range(rng.randint(1, 3)):
            code = "%s%02dZ" % (chapter, 80 + j)
            row = price_row(code, "%s minor procedure %d" % (desc, j + 1), "surgical", Decimal("0.3"))
            if rng.random() < 0.8:
                row["op_proc"] = Decimal(rng.randint(90, 600)) + Decimal(rng.choice([0, 0, 0.5]))
            hrgs.append(row)
            letter = opcs[j % len(opcs)] if opcs else "X"
            for _ in range(rng.randint(1, 3)):
                prefix = letter + "%02d" % rng.randint(0, 99)
                if rng.random() < 0.5:
                    prefix += str(rng.randint(0, 9))
                add_rule("APC", "OPCS4", prefix, code, False)
                add_rule("OP", "OPCS4", prefix, code, False)

    # Catch-alls: one per chapter letter, each mapped to a "99Z" HRG of a chapter.
    catch_hrgs = {}
    for chapter, desc, opcs, icd in CHAPTERS:
        code = chapter + "99Z"
        catch_hrgs[chapter] = code
        row = price_row(code, "%s unspecified" % desc, "medical", Decimal("0.6"))
        if chapter in ("WJ",):
            # Symptoms: no elective national price (excluded when elective), NEL priced.
            row["combined"] = None
            row["dc"] = None
            row["el"] = None
        hrgs.append(row)
    for letter in OPCS_LETTERS:
        chap = next((c for c, _, o, _ in CHAPTERS if letter in o), "WJ")
        add_rule("APC", "OPCS4", letter, catch_hrgs[chap], False)
    for letter in ICD_LETTERS:
        chap = next((c for c, _, _, i in CHAPTERS if letter in i), ICD_CATCHALL_EXTRA.get(letter, "WJ"))
        add_rule("APC", "ICD10", letter, catch_hrgs[chap], False)

    # Restricted-code rules and a grouped HRG without any price row (excluded: no national price).
    hrgs.append(price_row("MC10Z", "Assisted reproduction", "surgical", Decimal("0.5")))
    for ctype, prefix, _ in RESTRICTED:
        if prefix.startswith(("N97", "Z31", "Q13", "Q38")):
            add_rule("APC", ctype, prefix, "MC10Z", False)
    add_rule("APC", "ICD10", "Z99", "WD99Z", False)     # grouped, no price row at all
    add_rule("APC", "ICD10", "U07", "DZ11Z", False)     # grouped, price row with every price blank
    hrgs.append({"code": "DZ11Z", "name": "Emerging respiratory infection (local price)",
                 "blank": True})
    return hrgs, rules


def money(v):
    return None if v is None else Decimal(v).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)


def write_year(rng_seed, year, out, hrgs, rules, providers):
    rng = random.Random(rng_seed)
    up = UPLIFT[year]
    d = os.path.join(out, year)

    def p(v, fancy=False):
        if v is None:
            return ""
        return pounds(money(v) * up, rng, fancy)

    rows = []
    for h in hrgs:
        if h.get("blank"):
            rows.append([h["code"], h["name"], "", "", "-", "-", "", "-", "", "", "No", "", ""])
            continue
        fancy = rng.random() < 0.2
        ssem_app, pct, ssem = h["ssem"]
        rows.append([
            h["code"], h["name"], p(h["op_proc"], fancy), p(h["combined"], fancy),
            p(h["dc"], fancy), p(h["el"], fancy), str(h["el_trim"]), p(h["nel"], fancy),
            str(h["nel_trim"]), p(h["per_day"]), ssem_app, "" if pct is None else "%d%%" % pct,
            p(ssem, fancy),
        ])
    write_csv(os.path.join(d, "apc_oproc_prices.csv"), APC_HEADER, rows)

    trng = random.Random(7)  # TFC base prices identical in both years before the uplift
    op_rows = []
    for code, name in TFCS:
        first = Decimal(trng.randint(120, 320))
        fu = (first * Decimal(trng.choice(["0.45", "0.5", "0.55", "0.6"]))).quantize(Decimal("1"))
        if code in TFC_UNPRICED:
            op_rows.append([code, name, "", "", "", ""])
        else:
            op_rows.append([code, name, p(first), p(first * Decimal("1.25")), p(fu),
                            p(fu * Decimal("1.2"))])
    write_csv(os.path.join(d, "op_prices.csv"),
              ["Treatment function code", "Treatment function name",
               "First attendance - single professional (£)",
               "First attendance - multi-professional (£)",
               "Follow-up attendance - single professional (£)",
               "Follow-up attendance - multi-professional (£)"], op_rows)

    ec_rows = []
    for n in range(1, 12):
        t12 = Decimal(480 - (n - 1) * 38) + Decimal("0.50") * (n % 2)
        t34 = (t12 * Decimal("0.35")).quantize(Decimal("0.01"))
        ec_rows.append(["VB%02dZ" % n, "Emergency medicine, category %d" % n, p(t12),
                        "" if n == 11 else p(t34)])
    ec_rows.append(["VB99Z", "Emergency medicine, not groupable", "", ""])
    write_csv(os.path.join(d, "ec_prices.csv"),
              ["HRG code", "HRG name", "Type 1 and 2 departments (£)",
               "Type 3 and 4 departments (£)"], ec_rows)

    mrng = random.Random(11)
    mff_rows = []
    for code, name, _ in providers:
        base = mrng.randint(950000, 1250000)
        absent = mrng.random() < 0.06
        if absent:
            continue
        v = base + (mrng.randint(-3000, 3000) if year == "2024-25" else 0)
        mff_rows.append([code, name, "%d.%06d" % (v // 1000000, v % 1000000)])
    # one provider with an index that makes half-penny products likely
    write_csv(os.path.join(d, "mff.csv"), ["Org code", "Org name", "MFF payment index"], mff_rows)

    write_csv(os.path.join(d, "hrg_grouper.csv"),
              ["setting", "code_type", "code_prefix", "hrg", "cc_split"], rules)
    eg = [(c, "investigation", k) for c, k in EC_INVESTIGATIONS] + \
         [(c, "treatment", k) for c, k in EC_TREATMENTS]
    write_csv(os.path.join(d, "ec_grouper.csv"), ["snomed_code", "kind", "category"], eg)
    eh = []
    for i in range(4):
        for t in range(5):
            eh.append((i, t, "VB%02dZ" % (11 - (2 * i + t))))
    write_csv(os.path.join(d, "ec_hrg.csv"),
              ["investigation_category", "treatment_category", "hrg"], eh)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    args = ap.parse_args()
    out = os.path.normpath(args.out)
    rng = random.Random(SEED)
    providers = organisations(rng, out)
    write_csv(os.path.join(out, "codes/restricted_codes.csv"),
              ["code_type", "code_prefix", "list"], RESTRICTED)
    hrgs, rules = hrg_catalogue(rng)
    for i, year in enumerate(YEARS):
        write_year(SEED + 1 + i, year, out, hrgs, rules, providers)
    print("wrote sample reference data (%d providers, %d HRGs, %d grouper rules) to %s"
          % (len(providers), len(hrgs), len(rules), out))


if __name__ == "__main__":
    main()
