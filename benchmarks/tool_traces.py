"""Deterministic synthetic function-calling traces (OpenAI chat layout), for teaching a small model tool use.

Each line written is one trace::

    {"id": "...", "tools": [OpenAI tools], "messages": [user, assistant (tool_calls or text), ...]}

Why: a 135M model (SmolLM2-135M-Instruct) fine-tuned with LoRA should learn the *rule* of function
calling, not a set of answers: read the offered schemas, pick the function that fits (or none), and copy
the values of the request into arguments of the right JSON type. So the traces draw on a catalogue of 88
functions over 17 domains (travel, finance, science, maths, geometry, units, text, calendar, shopping,
sports, music, health, devops, databases, maps, education, cooking), each with a one-sentence
description and a JSON Schema of 1-4 parameters (strings, integers, numbers, booleans, enums, arrays;
some optional, some with defaults), several phrasings per function and values from varied pools.
Optional arguments appear in a call only when the request mentions them (the phrasing decides which
parameters it names); strings are copied verbatim; integers stay integers and numbers keep their
decimals. Shapes, by share of traces (exact quotas, then shuffled):

- 40% ``single``: one tool offered, one call;
- 20% ``multi``: 2-4 tools offered (half the distractors from the same domain), one call;
- 15% ``parallel``: several calls in one assistant turn (one function with different values, or two
  functions for a two-part request);
- 15% ``none``: no call is due (the request needs a tool that is not offered, sometimes a sibling of the
  one offered, or is small talk / general knowledge); the assistant answers briefly in text;
- 10% ``multistep``: a call, its result, then a short answer that uses the result.

Traces are short (tools are rendered into the prompt at ~100 tokens/s of training): at most 4 tools.

No overlap with evaluation data: the traces are meant for training before the Berkeley Function Calling
Leaderboard (BFCL: simple_python, multiple, parallel, irrelevance) and data/eval/tool-calls.jsonl. No
function name here equals (ignoring case, and with dots read as underscores) a function name of any
``BFCL_v4_*.json`` file or multi-turn function doc in the installed ``bfcl_eval`` package, nor a tool of
data/eval/tool-calls.jsonl; and no request equals a BFCL question. ``__main__`` asserts both whenever
``bfcl_eval`` is installed (and says it skipped the check when not); tests/eval/test_tool_traces.py does too.

    .venv/bin/python benchmarks/tool_traces.py --out /tmp/traces.jsonl --n 600 --seed 0

The output is a pure function of ``n`` and ``seed`` (``generate(n, seed)`` in Python).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import math
import random
import re
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EVAL_TOOLS = REPO / "data" / "eval" / "tool-calls.jsonl"
SHAPES = (("single", 0.40), ("multi", 0.20), ("parallel", 0.15), ("none", 0.15), ("multistep", 0.10))

# --------------------------------------------------------------------------- value pools

CITIES = ["Lisbon", "Osaka", "Nairobi", "Montreal", "Krakow", "Valparaiso", "Auckland", "Marrakesh", "Edinburgh",
          "Hanoi", "Bergen", "Cordoba", "Tbilisi", "Porto", "Seville", "Ljubljana", "Cusco", "Da Nang", "Salzburg",
          "Adelaide", "Reykjavik", "Cape Town", "Busan", "Quebec City", "San Diego", "Pune", "Izmir", "Graz"]
COUNTRIES = ["Portugal", "Japan", "Kenya", "Canada", "Poland", "Chile", "New Zealand", "Morocco", "Vietnam",
             "Norway", "Argentina", "Georgia", "Slovenia", "Peru", "Austria", "Iceland", "South Korea", "India"]
AIRPORTS = ["LIS", "KIX", "NBO", "YUL", "KRK", "AKL", "EDI", "HAN", "BGO", "TBS", "OPO", "SVQ", "CUZ", "SZG", "KEF"]
STATIONS = ["Lyon Part-Dieu", "Zurich HB", "Milano Centrale", "Wien Hbf", "Amsterdam Centraal", "Bruxelles-Midi",
            "Madrid Atocha", "Glasgow Central", "Praha hl.n.", "Basel SBB", "Bologna Centrale"]
CURRENCIES = ["USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "SEK", "NOK", "INR", "BRL", "ZAR", "MXN", "PLN"]
TICKERS = ["AAPL", "MSFT", "NVDA", "AMZN", "NFLX", "SHOP", "ASML", "SAP", "TM", "ORCL", "ADBE", "INTC", "KO"]
PEOPLE = ["Amara Okafor", "Lukas Brandt", "Mei Tanaka", "Rafael Ortiz", "Priya Nair", "Sven Lindqvist",
          "Chloe Martin", "Tomasz Zielinski", "Aisha Rahman", "Diego Alvarez", "Hana Kim", "Oliver Grant",
          "Ines Carvalho", "Kofi Mensah", "Yara Haddad"]
TEAMS = ["Riverside Rovers", "Northgate United", "Harbor City FC", "Eastfield Eagles", "Lakeshore Lynx",
         "Granite Bay Giants", "Coastal Comets", "Summit Stags", "Redwood Rangers", "Ironbridge Athletic"]
LEAGUES = ["Premier Division", "Coastal League", "National Basketball Circuit", "Eurocup", "Pacific Conference",
           "Championship", "Liga Norte"]
ARTISTS = ["Nina Simone", "Fleetwood Mac", "Bonobo", "Kali Uchis", "Arctic Monkeys", "Norah Jones", "Khruangbin",
           "Daft Punk", "Rosalia", "Tame Impala", "Miles Davis", "Bjork"]
SONGS = ["Paper Lanterns", "Northern Lights", "Coffee at Midnight", "Slow Tide", "Glass Houses", "Neon Rain",
         "Lemon Tree Road", "Second Wind", "Blue Hour", "Velvet Static", "Harbour Lights", "Quiet Engines"]
PLAYLISTS = ["Morning Run", "Deep Focus", "Sunday Cooking", "Road Trip 2025", "Rainy Day", "Gym Mix", "Late Night"]
PRODUCTS = ["wireless earbuds", "standing desk", "espresso machine", "hiking boots", "yoga mat", "air fryer",
            "mechanical keyboard", "rain jacket", "office chair", "electric kettle", "camping tent", "smart watch"]
COUPONS = ["SPRING15", "WELCOME10", "FREESHIP", "SAVE20NOW", "AUTUMN5", "VIPGOLD", "FIRSTORDER"]
FILES = ["logs/app.log", "src/main.py", "config/settings.yaml", "data/users.csv", "README.md", "scripts/deploy.sh",
         "notes/todo.txt", "docs/index.html", "/var/log/nginx/error.log", "build/output.txt"]
DIRS = ["/home/ana/photos", "/srv/uploads", "projects/website", "data/raw", "/var/lib/docker", "backups/2024",
        "reports/q3", "/opt/models"]
SERVICES = ["billing-api", "auth-service", "search-worker", "nginx", "checkout-web", "redis-cache", "mailer",
            "image-resizer", "payments-gateway"]
TABLES = ["orders", "customers", "invoices", "employees", "shipments", "products", "sessions", "reviews"]
COLUMNS = ["id", "email", "created_at", "status", "total", "country", "name", "updated_at"]
CONDITIONS = ["status = 'open'", "total > 100", "country = 'PT'", "created_at >= '2024-01-01'", "is_active = true",
              "age < 30", "rating >= 4"]
DATABASES = ["crm_prod", "analytics", "inventory", "hr_records", "blog_db", "ledger"]
CSV_PATHS = ["exports/orders.csv", "/tmp/dump.csv", "reports/customers_2024.csv", "out/table.csv", "backup/data.csv"]
PLACES = ["Central Station", "the airport", "Old Town Square", "the university campus", "Harbour Bridge",
          "City Hospital", "the stadium", "Riverside Park"]
CATEGORIES = ["pharmacies", "coffee shops", "bike repair shops", "libraries", "petrol stations", "bakeries",
              "museums", "co-working spaces", "vegan restaurants"]
ADDRESSES = ["12 Rua Augusta, Lisbon", "5 Rue Cler, Paris", "88 Queen Street, Auckland", "14 Karl-Marx-Allee, Berlin",
             "300 Bloor Street West, Toronto", "7 Calle Larios, Malaga", "21 Nevsky Prospekt, Saint Petersburg",
             "9 Grafton Street, Dublin"]
SUBJECTS = ["algebra", "organic chemistry", "world history", "statistics", "cell biology", "music theory",
            "macroeconomics", "Python programming", "astronomy", "creative writing"]
VOCAB = ["photosynthesis", "mitochondria", "osmosis", "enzyme", "catalyst", "isotope", "tectonic plate", "erosion",
         "ecosystem", "glacier", "metaphor", "inflation"]
LANGUAGES = ["French", "German", "Spanish", "Japanese", "Portuguese", "Italian", "Korean", "Dutch", "Swahili"]
PHRASES = ["Where is the train station?", "How much does this cost?", "I would like a table for two.",
           "Good luck with your exam!", "The meeting is moved to Monday.", "Could you speak more slowly?",
           "Happy birthday, dear friend.", "Is breakfast included?"]
SENTENCES = ["the cat sat on the mat and the cat slept", "We test early, we test often, and we ship calmly",
             "Rain in the valley brings green grass to the valley", "She sells sea shells by the sea shore",
             "Good code is read far more often than it is written", "A small step today beats a big step never",
             "Buy low, sell high, and never panic when markets fall"]
TITLES = ["Ten Tips for Better Sleep", "Why Rust Is Fast", "A Beginner's Guide to Sourdough",
          "The Hidden Cost of Meetings", "Moving to Lisbon: Year One", "How We Cut Cloud Costs by 40%"]
PALINDROMES = ["racecar", "level", "Never odd or even", "kayak", "banana", "Step on no pets", "rotor", "python",
               "Was it a car or a cat I saw", "notebook"]
MEETINGS = ["Sprint review", "Budget sync", "1:1 with Priya", "Design critique", "Quarterly planning", "Vendor call"]
REMINDERS = ["call the dentist", "renew the car insurance", "water the plants", "pay the electricity bill",
             "send the quarterly report", "pick up the dry cleaning", "book train tickets", "back up my laptop"]
ACTIVITIES = ["cycling", "swimming", "rowing", "hiking", "jumping rope", "yoga", "running", "dancing"]
INGREDIENTS = ["chickpeas", "spinach", "mushrooms", "lentils", "eggplant", "sweet potato", "quinoa", "tofu",
               "zucchini", "cauliflower", "black beans", "halloumi"]
DISHES = ["lasagna", "pad thai", "shakshuka", "risotto", "banana bread", "ramen", "paella", "goulash", "chili"]
SUBSTITUTES = ["butter", "eggs", "milk", "flour", "sugar", "heavy cream", "honey", "buttermilk", "sour cream"]
FOODS = ["oats", "almonds", "brown rice", "avocado", "greek yogurt", "salmon", "cheddar", "lentils", "banana"]
FORMULAS = {"H2O": 18.015, "NaCl": 58.44, "C6H12O6": 180.156, "CO2": 44.009, "H2SO4": 98.079, "CaCO3": 100.086,
            "NH3": 17.031, "C2H5OH": 46.069, "KMnO4": 158.034, "Fe2O3": 159.687, "CH4": 16.043, "HCl": 36.458}
NOTES = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]

# Small talk and general knowledge: no tool of the catalogue can or should serve them.
CHAT = [
    ("Hi! How's your day going?", "Going well, thanks for asking! What can I do for you?"),
    ("Thanks, that's everything for now.", "You're welcome. Have a good day!"),
    ("What's the capital of Australia?", "The capital of Australia is Canberra."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa."),
    ("Can you tell me a short joke?", "Why did the scarecrow win an award? He was outstanding in his field."),
    ("How many continents are there?", "There are seven continents."),
    ("What does CPU stand for?", "CPU stands for central processing unit."),
    ("Write a one-line motto for a bakery.", "Fresh from our oven to your table, every morning."),
    ("Who wrote the novel Frankenstein?", "Mary Shelley wrote Frankenstein."),
    ("Give me a synonym for 'happy'.", "A synonym for 'happy' is 'cheerful'."),
    ("What language do people speak in Brazil?", "Portuguese is the main language of Brazil."),
    ("Is a tomato a fruit or a vegetable?", "Botanically a tomato is a fruit, though it is cooked as a vegetable."),
    ("What's the difference between weather and climate?",
     "Weather is the short-term state of the air; climate is its average over many years."),
    ("Any tip for staying focused while studying?", "Work in 25-minute blocks with short breaks in between."),
    ("In what year did people first walk on the Moon?", "In 1969, during the Apollo 11 mission."),
    ("Good morning!", "Good morning! How can I help?"),
    ("Explain photosynthesis in one sentence.",
     "Plants use light to turn water and carbon dioxide into sugar and oxygen."),
    ("Which planet is closest to the Sun?", "Mercury is the closest planet to the Sun."),
    ("What is an API, in one sentence?", "An API is a defined way for one program to ask another for data or actions."),
    ("Tell me something fun about octopuses.", "Octopuses have three hearts and blue blood."),
    ("Suggest a name for a grey kitten.", "How about Smokey, Ash or Pebble?"),
    ("How many legs does a spider have?", "Spiders have eight legs."),
    ("Who are you?", "I'm an assistant that can answer questions and use the tools I'm given."),
    ("Can you recommend a classic novel to read?", "Try 'One Hundred Years of Solitude' by Gabriel Garcia Marquez."),
]

# --------------------------------------------------------------------------- parameters and functions


def _date(rng: random.Random) -> str:
    return (dt.date(2024, 1, 1) + dt.timedelta(days=rng.randrange(3 * 365))).isoformat()


def _clock(rng: random.Random) -> str:
    return f"{rng.randint(6, 21):02d}:{rng.choice([0, 15, 30, 45]):02d}"


def _morning(rng: random.Random) -> str:
    return f"{rng.randint(5, 9):02d}:{rng.choice([0, 15, 30, 45]):02d}"


def _number(rng: random.Random, lo: float, hi: float, nd: int) -> float | int:
    """A JSON number: usually with ``nd`` decimals, sometimes a whole number (valid for type number too);
    always whole when ``nd`` is 0 (amounts like 250000)."""
    if nd == 0 or rng.random() < 0.25:
        return rng.randint(math.ceil(lo), math.floor(hi))
    x = round(rng.uniform(lo, hi), nd)
    return round(x + 0.5, nd) if x == int(x) else x


_UNSET = object()


@dataclass
class P:
    """One parameter: its JSON Schema and how to draw a value the request will state."""

    kind: str  # string | integer | number | boolean | array
    desc: str
    draw: Callable[[random.Random], Any] | None = None
    opt: bool = False
    default: Any = _UNSET
    enum: list[str] | None = None
    items: str | None = None

    def schema(self) -> dict:
        desc = self.desc if self.default is _UNSET else f"{self.desc}; default {json.dumps(self.default)}"
        out: dict[str, Any] = {"type": self.kind, "description": desc}
        if self.enum:
            out["enum"] = list(self.enum)
        if self.items:
            out["items"] = {"type": self.items}
        if self.default is not _UNSET:
            out["default"] = self.default
        return out


def s(desc: str, pool, **kw) -> P:
    draw = pool if callable(pool) else (lambda rng: rng.choice(pool))
    return P("string", desc, draw, **kw)


def i(desc: str, lo: int, hi: int, **kw) -> P:
    return P("integer", desc, lambda rng: rng.randint(lo, hi), **kw)


def ic(desc: str, choices: list[int], **kw) -> P:
    return P("integer", desc, lambda rng: rng.choice(choices), **kw)


def n(desc: str, lo: float, hi: float, nd: int = 1, **kw) -> P:
    return P("number", desc, lambda rng: _number(rng, lo, hi, nd), **kw)


def b(desc: str, **kw) -> P:
    return P("boolean", desc, None, **kw)  # the phrasing sets it (the template's fixed values)


def e(desc: str, choices: list[str], **kw) -> P:
    return P("string", desc, lambda rng: rng.choice(choices), enum=choices, **kw)


def ls(desc: str, pool: list[str], k: tuple[int, int] = (2, 4), **kw) -> P:
    return P("array", desc, lambda rng: rng.sample(pool, rng.randint(*k)), items="string", **kw)


def ln(desc: str, lo: float, hi: float, k: tuple[int, int] = (3, 6), integer: bool = False, **kw) -> P:
    def draw(rng):
        m = rng.randint(*k)
        return [rng.randint(int(lo), int(hi)) for _ in range(m)] if integer else [
            _number(rng, lo, hi, 1) for _ in range(m)]
    return P("array", desc, draw, items="integer" if integer else "number", **kw)


@dataclass
class Fn:
    domain: str
    name: str
    description: str
    params: dict[str, P]
    templates: list[tuple[str, dict]]
    par: tuple[str, ...] = ()  # parameters a parallel request may vary ("for X and for Y")
    out: tuple[str, Callable, str] | None = None  # (result key, value(args, rng), answer using {r})
    fields: list[set[str]] = field(default_factory=list)

    def tool(self) -> dict:
        return {"type": "function", "function": {
            "name": self.name, "description": self.description,
            "parameters": {"type": "object", "properties": {k: p.schema() for k, p in self.params.items()},
                           "required": [k for k, p in self.params.items() if not p.opt]}}}

    def summary(self) -> str:
        return self.description[0].lower() + self.description[1:].rstrip(".")


_FIELD = re.compile(r"\{(\w+)\}")
CATALOG: list[Fn] = []


def fn(domain, name, description, params, templates, par=(), out=None) -> None:
    tpls = [(t, {}) if isinstance(t, str) else t for t in templates]
    f = Fn(domain, name, description, params, tpls, tuple(par), out)
    required = {k for k, p in params.items() if not p.opt}
    for text, fixed in tpls:
        used = set(_FIELD.findall(text))
        assert used <= set(params) and not used & set(fixed), (name, text)
        assert required <= used | set(fixed), (name, text, required - used - set(fixed))
        assert all(params[k].draw is not None for k in used), (name, text)
        f.fields.append(used)
    assert all(any(p in u for u in f.fields) for p in f.par), name
    assert 1 <= len(params) <= 4 and description.endswith(".") and description[0].isupper(), name
    CATALOG.append(f)


def _r2(x: float) -> float | int:
    x = round(x, 2)
    return int(x) if x == int(x) else x


# --- travel
fn("travel", "travel.fare_search", "Search one-way airfares between two airports on a given date.",
   {"origin": s("IATA code of the departure airport", AIRPORTS),
    "destination": s("IATA code of the arrival airport", AIRPORTS),
    "date": s("Departure date as YYYY-MM-DD", _date),
    "cabin": e("Cabin class", ["economy", "premium", "business"], opt=True, default="economy")},
   ["Find flights from {origin} to {destination} on {date}.",
    "What does a one-way ticket from {origin} to {destination} cost on {date}?",
    "Search {cabin} fares from {origin} to {destination} departing {date}.",
    "I want to fly {origin} -> {destination} on {date} in {cabin}. Show me fares."],
   par=("destination", "date"),
   out=("cheapest_usd", lambda a, r: r.randint(60, 900), "The cheapest fare from {origin} to {destination} on "
        "{date} is {r} USD."))
fn("travel", "hotels.vacancy_search", "List hotels with free rooms in a city for a stay.",
   {"city": s("City name", CITIES), "check_in": s("Arrival date as YYYY-MM-DD", _date),
    "nights": i("Number of nights", 1, 14), "guests": i("Number of guests", 1, 6, opt=True, default=2)},
   ["Any hotel rooms in {city} from {check_in} for {nights} nights?",
    "Find a hotel in {city}, checking in {check_in}, {nights} nights, {guests} guests.",
    "Look for available hotels in {city} for {nights} nights starting {check_in}.",
    "We are {guests} people. Which hotels in {city} have rooms for {nights} nights from {check_in}?"],
   par=("city", "nights"),
   out=("hotels_available", lambda a, r: r.randint(2, 40), "{r} hotels in {city} have rooms from {check_in}."))
fn("travel", "visa_rules_check", "Tell whether a passport holder needs a visa for a destination country.",
   {"passport_country": s("Country that issued the passport", COUNTRIES),
    "destination_country": s("Country to visit", COUNTRIES)},
   ["Do citizens of {passport_country} need a visa to visit {destination_country}?",
    "I hold a passport from {passport_country}. Is a visa required for {destination_country}?",
    "Check the visa rules for {passport_country} passport holders travelling to {destination_country}."],
   par=("destination_country",),
   out=("rule", lambda a, r: r.choice(["visa required", "no visa needed for up to 90 days", "e-visa online"]),
        "For a {passport_country} passport going to {destination_country}: {r}."))
fn("travel", "travel.trip_cost_estimate", "Estimate the total cost of a trip from its length and daily spending.",
   {"days": i("Length of the trip in days", 2, 21), "daily_spend": n("Money spent per day", 30, 400, 2),
    "currency": s("Currency code of the amounts", CURRENCIES, opt=True)},
   ["Estimate the cost of a {days}-day trip spending {daily_spend} a day.",
    "How much will {days} days of travel cost at {daily_spend} {currency} per day?",
    "Budget a holiday for me: {days} days at {daily_spend} daily."],
   par=("days",),
   out=("total", lambda a, r: _r2(a["days"] * a["daily_spend"]), "A {days}-day trip at {daily_spend} a day costs "
        "about {r}."))
fn("travel", "rail_departures_list", "List train departures between two stations.",
   {"from_station": s("Departure station", STATIONS), "to_station": s("Arrival station", STATIONS),
    "after_time": s("Earliest departure, HH:MM", _clock, opt=True)},
   ["Which trains go from {from_station} to {to_station}?",
    "List departures from {from_station} to {to_station} after {after_time}.",
    "Show me trains between {from_station} and {to_station} leaving after {after_time}."],
   par=("to_station",),
   out=("next_departure", lambda a, r: _later(a.get("after_time", "06:00"), r.randint(4, 80)),
        "The next train from {from_station} to {to_station} leaves at {r}."))

# --- finance
fn("finance", "finance.compound_growth", "Compute the future value of a deposit with compound interest.",
   {"principal": n("Amount deposited", 500, 50000, 2), "annual_rate_pct": n("Yearly interest rate in percent", 0.5, 9, 2),
    "years": i("Number of years", 1, 30),
    "compounds_per_year": ic("Compounding periods per year", [2, 4, 12, 365], opt=True, default=1)},
   ["What will {principal} grow to in {years} years at {annual_rate_pct}% interest?",
    "Compute the future value of {principal} invested for {years} years at {annual_rate_pct}% a year, compounded "
    "{compounds_per_year} times a year.",
    "If I deposit {principal} at an annual rate of {annual_rate_pct} percent, how much will I have after {years} years?"],
   par=("years", "principal"),
   out=("future_value", lambda a, r: _r2(a["principal"] * (1 + a["annual_rate_pct"] / 100) ** a["years"]),
        "After {years} years it grows to about {r}."))
fn("finance", "fx_amount_convert", "Convert an amount of money from one currency to another.",
   {"amount": n("Amount to convert", 1, 10000, 2), "from_code": s("ISO code of the source currency", CURRENCIES),
    "to_code": s("ISO code of the target currency", CURRENCIES)},
   ["Convert {amount} {from_code} to {to_code}.", "How much is {amount} {from_code} in {to_code}?",
    "I have {amount} {from_code}. What is that in {to_code}?"],
   par=("to_code", "amount"),
   out=("converted", lambda a, r: _r2(a["amount"] * r.uniform(0.2, 3)), "{amount} {from_code} is about {r} {to_code}."))
fn("finance", "equity_quote_fetch", "Get the latest share price for a stock ticker.",
   {"ticker": s("Ticker symbol", TICKERS), "exchange": e("Exchange", ["NYSE", "NASDAQ", "LSE", "TSE", "XETRA"], opt=True)},
   ["What's the current price of {ticker}?", "Get the latest quote for {ticker} on {exchange}.",
    "How much is one {ticker} share right now?", "Price check: {ticker} on the {exchange}."],
   par=("ticker",),
   out=("price", lambda a, r: _r2(r.uniform(10, 900)), "{ticker} is trading at {r}."))
fn("finance", "mortgage.monthly_installment", "Compute the monthly repayment of a fixed-rate mortgage.",
   {"loan_amount": n("Amount borrowed", 50000, 900000, 0), "rate_pct": n("Yearly interest rate in percent", 1, 8, 2),
    "term_years": ic("Length of the loan in years", [10, 15, 20, 25, 30, 35])},
   ["What's the monthly payment on a {loan_amount} mortgage at {rate_pct}% over {term_years} years?",
    "Calculate my monthly installment: borrowing {loan_amount} for {term_years} years at {rate_pct} percent.",
    "Mortgage of {loan_amount}, {term_years}-year term, {rate_pct}% rate. Monthly cost?"],
   par=("term_years", "rate_pct"),
   out=("monthly", lambda a, r: _r2(a["loan_amount"] * (a["rate_pct"] / 1200) / (
       1 - (1 + a["rate_pct"] / 1200) ** (-12 * a["term_years"]))), "The monthly repayment is {r}."))
fn("finance", "bill_split_calc", "Split a restaurant bill evenly between people, with an optional tip.",
   {"total": n("Bill total", 20, 600, 2), "people": i("Number of people", 2, 12),
    "tip_pct": n("Tip in percent", 5, 25, 0, opt=True, default=0)},
   ["Split a bill of {total} between {people} people.",
    "We owe {total} for dinner, {people} of us, plus a {tip_pct}% tip. How much each?",
    "Divide {total} evenly among {people} friends with a {tip_pct} percent tip."],
   par=("people",),
   out=("per_person", lambda a, r: _r2(a["total"] * (1 + a.get("tip_pct", 0) / 100) / a["people"]),
        "Each person pays {r}."))
fn("finance", "finance.break_even_units", "Compute how many units must be sold to cover fixed costs.",
   {"fixed_costs": n("Fixed costs", 1000, 90000, 0), "unit_price": n("Selling price per unit", 20, 200, 2),
    "unit_cost": n("Variable cost per unit", 2, 18, 2)},
   ["How many units do I need to sell to break even with fixed costs of {fixed_costs}, a price of {unit_price} and "
    "a unit cost of {unit_cost}?",
    "Break-even point: fixed costs {fixed_costs}, selling price {unit_price}, variable cost {unit_cost} per unit."],
   par=("unit_price",),
   out=("units", lambda a, r: math.ceil(a["fixed_costs"] / (a["unit_price"] - a["unit_cost"])),
        "You break even after selling {r} units."))

# --- science
fn("science", "physics.kinetic_energy_joules", "Compute the kinetic energy of a moving mass.",
   {"mass_kg": n("Mass in kilograms", 0.1, 2000, 1), "speed_ms": n("Speed in metres per second", 0.5, 90, 1)},
   ["What is the kinetic energy of a {mass_kg} kg object moving at {speed_ms} m/s?",
    "Compute the kinetic energy for a mass of {mass_kg} kg at a speed of {speed_ms} m/s.",
    "A {mass_kg} kg cart rolls at {speed_ms} m/s. How much kinetic energy does it have?"],
   par=("speed_ms",),
   out=("joules", lambda a, r: _r2(0.5 * a["mass_kg"] * a["speed_ms"] ** 2), "Its kinetic energy is {r} J."))
fn("science", "chem.formula_molar_mass", "Return the molar mass of a chemical formula in g/mol.",
   {"formula": s("Chemical formula, e.g. H2O", list(FORMULAS))},
   ["What is the molar mass of {formula}?", "Give me the molar mass of {formula} in g/mol.",
    "Look up the molar mass of the compound {formula}."],
   par=("formula",),
   out=("g_per_mol", lambda a, r: FORMULAS[a["formula"]], "The molar mass of {formula} is {r} g/mol."))
fn("science", "circuit.current_from_voltage", "Compute the electric current through a resistor with Ohm's law.",
   {"voltage": n("Voltage in volts", 1.5, 240, 1), "resistance_ohms": n("Resistance in ohms", 1, 10000, 1)},
   ["What current flows through a {resistance_ohms} ohm resistor at {voltage} volts?",
    "Compute the current for {voltage} V across {resistance_ohms} ohms.",
    "Find the amps drawn when {voltage} volts drive a {resistance_ohms}-ohm load."],
   par=("resistance_ohms",),
   out=("amperes", lambda a, r: round(a["voltage"] / a["resistance_ohms"], 4), "The current is {r} A."))
fn("science", "isotope_decay_remaining", "Compute how much of a radioactive sample remains after some time.",
   {"initial_grams": n("Starting mass in grams", 1, 500, 1), "half_life_years": n("Half-life in years", 0.5, 6000, 1),
    "elapsed_years": n("Time passed in years", 1, 20000, 1)},
   ["I have {initial_grams} g of an isotope with a half-life of {half_life_years} years. How much is left after "
    "{elapsed_years} years?",
    "Remaining mass after {elapsed_years} years, starting from {initial_grams} grams with a half-life of "
    "{half_life_years} years?"],
   par=("elapsed_years",),
   out=("grams_left", lambda a, r: round(a["initial_grams"] * 0.5 ** (a["elapsed_years"] / a["half_life_years"]), 4),
        "About {r} g remain."))
fn("science", "physics.drop_time_seconds", "Compute how long an object takes to fall from a height, ignoring air.",
   {"height_m": n("Drop height in metres", 1, 500, 1), "gravity": n("Gravity in m/s^2", 1.6, 24.8, 2, opt=True,
                                                                      default=9.81)},
   ["How long does a stone take to fall {height_m} metres?",
    "Time for an object dropped from {height_m} m to hit the ground where gravity is {gravity} m/s^2?",
    "If I drop a ball from {height_m} m, how many seconds until it lands?"],
   par=("height_m",),
   out=("seconds", lambda a, r: _r2(math.sqrt(2 * a["height_m"] / a.get("gravity", 9.81))),
        "It takes about {r} seconds to fall."))

# --- maths
fn("maths", "maths.gcd_of_list", "Find the greatest common divisor of a list of integers.",
   {"numbers": ln("Integers to compare", 6, 360, k=(2, 4), integer=True)},
   ["Work out the GCD of {numbers}.", "What's the largest integer that divides {numbers} evenly?",
    "Greatest common divisor for {numbers}, please."],
   out=("gcd", lambda a, r: math.gcd(*a["numbers"]), "The greatest common divisor is {r}."))
fn("maths", "prime_factor_breakdown", "Break a positive integer into its prime factors.",
   {"value": i("The integer to factor", 12, 99999)},
   ["Factorize {value} into primes.", "List the prime factors of {value}.",
    "Break {value} down into its prime factors."],
   par=("value",),
   out=("factors", lambda a, r: _factors(a["value"]), "The prime factors of {value} are {r}."))
fn("maths", "stats.median_value", "Return the median of a list of numbers.",
   {"values": ln("The numbers", 0, 500, k=(3, 7))},
   ["What is the median of {values}?", "Find the median value in this list: {values}.",
    "Give me the middle value of {values}."],
   out=("median", lambda a, r: _r2(_median(a["values"])), "The median is {r}."))
fn("maths", "maths.choose_count", "Count the ways to choose some items from a larger set, ignoring order.",
   {"total": i("Size of the set", 12, 60), "pick": i("How many are chosen", 1, 10)},
   ["How many ways can I choose {pick} items out of {total}?", "Compute {total} choose {pick}.",
    "In how many ways can a committee of {pick} be picked from {total} people?"],
   par=("pick",),
   out=("ways", lambda a, r: math.comb(a["total"], a["pick"]), "There are {r} ways."))
fn("maths", "percent_of_whole", "Compute what percentage one amount is of a total.",
   {"part": n("The part", 1, 500, 1), "whole": n("The total", 600, 5000, 1)},
   ["What percentage of {whole} is {part}?", "{part} out of {whole} is what percent?",
    "Express {part} as a percentage of {whole}."],
   par=("part",),
   out=("percent", lambda a, r: _r2(100 * a["part"] / a["whole"]), "{part} is {r}% of {whole}."))
fn("maths", "maths.fibonacci_terms", "List the first terms of the Fibonacci sequence.",
   {"count": i("Number of terms", 3, 30)},
   ["List the first {count} Fibonacci numbers.", "Generate {count} terms of the Fibonacci sequence.",
    "Show the Fibonacci sequence up to {count} terms."],
   par=("count",),
   out=("last_term", lambda a, r: _fib(a["count"]), "Term number {count} is {r}."))

# --- geometry
UNITS_LEN = ["cm", "m", "inches", "feet", "mm"]
fn("geometry", "shapes.trapezoid_area", "Compute the area of a trapezoid from its parallel sides and height.",
   {"side_a": i("First parallel side", 2, 40), "side_b": i("Second parallel side", 2, 40),
    "height": i("Distance between the parallel sides", 1, 30), "unit": s("Unit of length", UNITS_LEN, opt=True)},
   ["Find the area of a trapezoid with parallel sides {side_a} and {side_b} and height {height}.",
    "A trapezoid has bases of {side_a} {unit} and {side_b} {unit} and is {height} {unit} tall. What is its area?",
    "Area of a trapezium with sides {side_a} and {side_b}, height {height}?"],
   par=("height",),
   out=("area", lambda a, r: _r2((a["side_a"] + a["side_b"]) * a["height"] / 2), "The area is {r}."))
fn("geometry", "sphere_volume_calc", "Compute the volume of a sphere from its radius.",
   {"radius": n("Radius of the sphere", 0.5, 50, 1), "unit": s("Unit of length", UNITS_LEN, opt=True)},
   ["What is the volume of a sphere with radius {radius}?", "Compute the volume of a ball whose radius is {radius} {unit}.",
    "Sphere volume for a radius of {radius}, please."],
   par=("radius",),
   out=("volume", lambda a, r: _r2(4 / 3 * math.pi * a["radius"] ** 3), "The volume is {r}."))
fn("geometry", "shapes.rectangle_diagonal", "Compute the length of a rectangle's diagonal.",
   {"width": i("Width", 1, 100), "length": i("Length", 1, 100)},
   ["How long is the diagonal of a {width} by {length} rectangle?",
    "Find the diagonal of a rectangle with width {width} and length {length}.",
    "What's the corner-to-corner distance of a {width} x {length} rectangle?"],
   par=("width",),
   out=("diagonal", lambda a, r: _r2(math.hypot(a["width"], a["length"])), "The diagonal is {r}."))
fn("geometry", "polygon_interior_angle", "Compute one interior angle of a regular polygon in degrees.",
   {"sides": i("Number of sides", 3, 20)},
   ["What is each interior angle of a regular polygon with {sides} sides?",
    "Interior angle of a regular {sides}-sided polygon?",
    "Compute one interior angle for a regular polygon having {sides} sides."],
   par=("sides",),
   out=("degrees", lambda a, r: _r2(180 * (a["sides"] - 2) / a["sides"]), "Each interior angle is {r} degrees."))
fn("geometry", "cylinder_surface_area", "Compute the total surface area of a closed cylinder.",
   {"radius": n("Radius of the base", 0.5, 40, 1), "height": n("Height", 0.5, 80, 1),
    "unit": s("Unit of length", UNITS_LEN, opt=True)},
   ["Find the total surface area of a cylinder with radius {radius} and height {height}.",
    "A can is {height} {unit} tall with a radius of {radius} {unit}. What's its surface area?",
    "Surface area of a cylinder: r = {radius}, h = {height}."],
   par=("radius",),
   out=("area", lambda a, r: _r2(2 * math.pi * a["radius"] * (a["radius"] + a["height"])), "The surface area is {r}."))
fn("geometry", "shapes.ellipse_area", "Compute the area of an ellipse from its two semi-axes.",
   {"semi_major": n("Semi-major axis", 1, 60, 1), "semi_minor": n("Semi-minor axis", 0.5, 30, 1)},
   ["Area of an ellipse with semi-axes {semi_major} and {semi_minor}?",
    "Compute the area of an ellipse whose semi-major axis is {semi_major} and semi-minor axis is {semi_minor}."],
   par=("semi_minor",),
   out=("area", lambda a, r: _r2(math.pi * a["semi_major"] * a["semi_minor"]), "The area is {r}."))

# --- units
LENGTHS = {"mm": 0.001, "cm": 0.01, "m": 1, "km": 1000, "in": 0.0254, "ft": 0.3048, "yd": 0.9144, "mi": 1609.344}
MASSES = {"mg": 1e-6, "g": 0.001, "kg": 1, "lb": 0.45359237, "oz": 0.028349523, "t": 1000}
SIZES = ["KB", "MB", "GB", "TB"]
fn("units", "temperature_scale_convert", "Convert a temperature between Celsius, Fahrenheit and Kelvin.",
   {"value": n("The temperature", -40, 500, 1), "from_scale": e("Scale of the value", ["celsius", "fahrenheit", "kelvin"]),
    "to_scale": e("Target scale", ["celsius", "fahrenheit", "kelvin"])},
   ["Convert {value} degrees {from_scale} to {to_scale}.", "What is {value} {from_scale} in {to_scale}?",
    "Change {value} from {from_scale} to {to_scale}."],
   par=("value",),
   out=("value", lambda a, r: _r2(_temp(a["value"], a["from_scale"], a["to_scale"])), "That is {r} {to_scale}."))
fn("units", "length_unit_switch", "Convert a length from one unit to another.",
   {"value": n("The length", 0.1, 5000, 2), "from_unit": e("Unit of the value", list(LENGTHS)),
    "to_unit": e("Target unit", list(LENGTHS))},
   ["Convert {value} {from_unit} to {to_unit}.", "How many {to_unit} are in {value} {from_unit}?",
    "Express {value} {from_unit} in {to_unit}."],
   par=("value", "to_unit"),
   out=("value", lambda a, r: round(a["value"] * LENGTHS[a["from_unit"]] / LENGTHS[a["to_unit"]], 4),
        "{value} {from_unit} is {r} {to_unit}."))
fn("units", "units.mass_convert", "Convert a weight from one unit to another.",
   {"value": n("The weight", 0.1, 5000, 2), "from_unit": e("Unit of the value", list(MASSES)),
    "to_unit": e("Target unit", list(MASSES))},
   ["Convert a weight of {value} {from_unit} into {to_unit}.", "{value} {from_unit} equals how many {to_unit}?",
    "What's {value} {from_unit} in {to_unit}?"],
   par=("value",),
   out=("value", lambda a, r: round(a["value"] * MASSES[a["from_unit"]] / MASSES[a["to_unit"]], 4),
        "{value} {from_unit} is {r} {to_unit}."))
fn("units", "fuel_economy_convert", "Convert fuel consumption between miles per gallon and litres per 100 km.",
   {"value": n("The figure to convert", 3, 70, 1), "direction": e("Which way", ["mpg_to_l100km", "l100km_to_mpg"])},
   [("Convert {value} mpg to litres per 100 km.", {"direction": "mpg_to_l100km"}),
    ("My car does {value} miles per gallon. What is that in L/100km?", {"direction": "mpg_to_l100km"}),
    ("Turn {value} L/100km into miles per gallon.", {"direction": "l100km_to_mpg"}),
    ("What is {value} litres per 100 km in mpg?", {"direction": "l100km_to_mpg"})],
   par=("value",),
   out=("result", lambda a, r: _r2(235.215 / a["value"]), "That works out to {r}."))
fn("units", "units.storage_size_convert", "Convert a data size between KB, MB, GB and TB.",
   {"value": n("The size", 0.5, 9000, 1), "from_unit": e("Unit of the value", SIZES), "to_unit": e("Target unit", SIZES),
    "binary": b("Use 1024-based units", opt=True, default=False)},
   ["How many {to_unit} is {value} {from_unit}?",
    ("Convert {value} {from_unit} to {to_unit} using binary (1024-based) units.", {"binary": True}),
    "Convert {value} {from_unit} to {to_unit}."],
   par=("value",),
   out=("value", lambda a, r: round(a["value"] * (1024 if a.get("binary") else 1000) ** (
       SIZES.index(a["from_unit"]) - SIZES.index(a["to_unit"])), 6), "{value} {from_unit} is {r} {to_unit}."))

# --- text
fn("text", "text.word_frequency", "Count how often each word occurs in a text.",
   {"text": s("The text", SENTENCES), "top_n": i("Only the most frequent words", 1, 5, opt=True)},
   ["Count how often each word appears in: \"{text}\"", "Give me the {top_n} most frequent words in \"{text}\".",
    "Word counts for this sentence, please: {text}"],
   out=("most_common", lambda a, r: Counter(a["text"].lower().replace(",", "").split()).most_common(1)[0][0],
        "The most frequent word is \"{r}\"."))
fn("text", "reverse_words_order", "Reverse the order of the words in a sentence.",
   {"text": s("The sentence", SENTENCES + PHRASES)},
   ["Reverse the word order of \"{text}\".", "Write this sentence backwards, word by word: {text}",
    "Flip the words around in \"{text}\"."],
   out=("reversed", lambda a, r: " ".join(reversed(a["text"].split())), "Reversed: \"{r}\""))
fn("text", "text.translate_phrase", "Translate a short phrase into another language.",
   {"text": s("The phrase", PHRASES), "target_language": s("Language to translate into", LANGUAGES),
    "formal": b("Use the formal register", opt=True, default=False)},
   ["Translate \"{text}\" into {target_language}.",
    ("How do I say \"{text}\" formally in {target_language}?", {"formal": True}),
    "What is \"{text}\" in {target_language}?"],
   par=("target_language",))
fn("text", "slugify_title", "Turn a title into a lowercase URL slug.",
   {"title": s("The title", TITLES), "max_length": i("Longest slug allowed", 20, 60, opt=True)},
   ["Make a URL slug from the title \"{title}\".", "Turn \"{title}\" into a slug of at most {max_length} characters.",
    "Slugify this headline: {title}"],
   par=("title",),
   out=("slug", lambda a, r: re.sub(r"[^a-z0-9]+", "-", a["title"].lower()).strip("-")[: a.get("max_length", 99)],
        "The slug is {r}."))
fn("text", "text.readability_grade", "Score how easy a text is to read.",
   {"text": s("The text", SENTENCES), "scale": e("Readability formula", ["flesch", "gunning_fog", "smog"], opt=True)},
   ["How readable is this: \"{text}\"?", "Score the readability of \"{text}\" with the {scale} formula.",
    "Rate the reading difficulty of: {text}"],
   out=("score", lambda a, r: _r2(r.uniform(40, 95)), "Its readability score is {r}."))
fn("text", "text.palindrome_check", "Tell whether a word or phrase reads the same backwards.",
   {"phrase": s("Word or phrase", PALINDROMES)},
   ["Is \"{phrase}\" a palindrome?", "Check whether {phrase} reads the same backwards.",
    "Does \"{phrase}\" read the same in both directions?"],
   par=("phrase",),
   out=("palindrome", lambda a, r: _clean(a["phrase"]) == _clean(a["phrase"])[::-1], "Palindrome: {r}."))

# --- calendar
fn("calendar", "calendar.schedule_meeting", "Put a meeting in the calendar.",
   {"title": s("Meeting title", MEETINGS), "date": s("Date as YYYY-MM-DD", _date), "start_time": s("Start, HH:MM", _clock),
    "duration_minutes": ic("Length in minutes", [15, 45, 60, 90], opt=True, default=30)},
   ["Schedule \"{title}\" on {date} at {start_time}.",
    "Set up a {duration_minutes}-minute meeting called \"{title}\" on {date} at {start_time}.",
    "Book {title} for {date} at {start_time}, lasting {duration_minutes} minutes."],
   out=("event_id", lambda a, r: f"evt_{r.randint(1000, 9999)}", "Done: \"{title}\" is booked for {date} at "
        "{start_time}."))
fn("calendar", "days_between_dates", "Count the days between two dates.",
   {"start_date": s("First date as YYYY-MM-DD", _date), "end_date": s("Second date as YYYY-MM-DD", _date),
    "include_end": b("Count the end date too", opt=True, default=False)},
   ["How many days are there between {start_date} and {end_date}?",
    ("Count the days from {start_date} to {end_date}, including the last day.", {"include_end": True}),
    "Days from {start_date} until {end_date}?"],
   par=("end_date",),
   out=("days", lambda a, r: abs((dt.date.fromisoformat(a["end_date"]) - dt.date.fromisoformat(a["start_date"])).days)
        + (1 if a.get("include_end") else 0), "That is {r} days."))
fn("calendar", "weekday_of_date", "Tell which day of the week a date falls on.",
   {"date": s("Date as YYYY-MM-DD", _date)},
   ["What day of the week is {date}?", "Which weekday does {date} fall on?", "Tell me the weekday for {date}."],
   par=("date",),
   out=("weekday", lambda a, r: dt.date.fromisoformat(a["date"]).strftime("%A"), "{date} is a {r}."))
fn("calendar", "calendar.add_reminder", "Create a reminder for a date and optional time.",
   {"note": s("What to be reminded of", REMINDERS), "date": s("Date as YYYY-MM-DD", _date),
    "time": s("Time, HH:MM", _clock, opt=True)},
   ["Remind me to {note} on {date}.", "Set a reminder to {note} on {date} at {time}.",
    "Add a reminder for {date} at {time}: {note}."],
   out=("reminder_id", lambda a, r: f"rem_{r.randint(100, 999)}", "I'll remind you to {note} on {date}."))
fn("calendar", "working_days_count", "Count the business days between two dates.",
   {"start_date": s("First date as YYYY-MM-DD", _date), "end_date": s("Last date as YYYY-MM-DD", _date),
    "country": s("Country whose public holidays are skipped", COUNTRIES, opt=True)},
   ["How many working days are there between {start_date} and {end_date}?",
    "Count business days from {start_date} to {end_date} in {country}, skipping public holidays."],
   out=("working_days", lambda a, r: r.randint(5, 400), "There are {r} working days in that period."))

# --- shopping
fn("shopping", "shop.catalog_search", "Search the store's products.",
   {"query": s("What to look for", PRODUCTS), "max_price": n("Highest price", 20, 800, 0, opt=True),
    "sort_by": e("Order of results", ["price", "rating", "newest"], opt=True)},
   ["Search the store for {query}.", "Search for {query} under {max_price} dollars.", "Show me {query} sorted by {sort_by}.",
    "Look for {query} cheaper than {max_price}, sorted by {sort_by}."],
   par=("query",),
   out=("results", lambda a, r: r.randint(0, 60), "I found {r} matches for {query}."))
fn("shopping", "cart_add_item", "Add a product to the shopping cart.",
   {"product_id": s("Product SKU", lambda rng: f"SKU-{rng.randint(10000, 99999)}"),
    "quantity": i("How many", 1, 12)},
   ["Add {quantity} of item {product_id} to my cart.", "Put {product_id} in the basket, quantity {quantity}.",
    "I'd like {quantity} units of {product_id} added to my cart."],
   par=("product_id", "quantity"),
   out=("cart_items", lambda a, r: a["quantity"] + r.randint(0, 5), "Added. Your cart now holds {r} items."))
fn("shopping", "shop.order_status", "Get the delivery status of a store order.",
   {"order_number": s("Order number", lambda rng: f"ORD-{rng.randint(100000, 999999)}")},
   ["Where is my order {order_number}?", "Check the status of order {order_number}.",
    "Has order {order_number} shipped yet?"],
   par=("order_number",),
   out=("status", lambda a, r: r.choice(["processing", "shipped", "out for delivery", "delivered"]),
        "Order {order_number} is {r}."))
fn("shopping", "apply_coupon_code", "Apply a discount code to a cart and return the new total.",
   {"code": s("Coupon code", COUPONS), "cart_total": n("Cart total before the discount", 10, 900, 2)},
   ["Apply the coupon {code} to my cart of {cart_total}.", "Does the code {code} work on a {cart_total} order?",
    "Use discount code {code}; my cart is {cart_total}."],
   par=("code",),
   out=("new_total", lambda a, r: _r2(a["cart_total"] * r.choice([0.8, 0.85, 0.9])), "With {code} your total is {r}."))
fn("shopping", "shop.price_history", "Show how a product's price changed over time.",
   {"product": s("Product name", PRODUCTS), "days": i("How many days back", 7, 365, opt=True, default=90)},
   ["Show the price history of the {product}.", "How has the price of {product} changed over the last {days} days?",
    "Price trend for {product} in the past {days} days?"],
   par=("product",),
   out=("lowest", lambda a, r: _r2(r.uniform(15, 600)), "The lowest recent price of {product} was {r}."))

# --- sports
fn("sports", "sports.player_season_stats", "Get a player's statistics for one season.",
   {"player": s("Player name", PEOPLE), "season": i("Season start year", 2005, 2024),
    "league": s("League", LEAGUES, opt=True)},
   ["Get {player}'s stats for the {season} season.", "Show me {player}'s numbers in {season} in the {league}.",
    "How did {player} perform in {season}?"],
   par=("season", "player"),
   out=("points_per_game", lambda a, r: _r2(r.uniform(2, 31)), "{player} averaged {r} points per game in {season}."))
fn("sports", "match_results_lookup", "Get the final score of a team's match on a date.",
   {"team": s("Team name", TEAMS), "date": s("Match date as YYYY-MM-DD", _date)},
   ["What was the score of the {team} game on {date}?", "Get the result of the {team} match on {date}.",
    "How did {team} do on {date}?"],
   par=("team",),
   out=("score", lambda a, r: f"{r.randint(0, 5)}-{r.randint(0, 5)}", "{team} finished {r} on {date}."))
fn("sports", "league_table_standings", "Show a league's standings table.",
   {"league": s("League", LEAGUES), "season": i("Season start year", 2005, 2024, opt=True)},
   ["Show the current {league} table.", "What were the {league} standings in {season}?", "Who's top of the {league}?"],
   par=("league",),
   out=("leader", lambda a, r: r.choice(TEAMS), "{r} lead the {league}."))
fn("sports", "sports.head_to_head", "Compare two teams' record against each other.",
   {"team_a": s("First team", TEAMS), "team_b": s("Second team", TEAMS), "last_n": i("Only the last N games", 3, 10,
                                                                                       opt=True)},
   ["What's the head-to-head record between {team_a} and {team_b}?",
    "Compare {team_a} and {team_b} over their last {last_n} meetings."],
   par=("team_b",),
   out=("wins_a", lambda a, r: r.randint(0, 9), "{team_a} won {r} of those games against {team_b}."))
fn("sports", "running_pace_calc", "Compute running pace per kilometre from distance and finish time.",
   {"distance_km": n("Distance in kilometres", 1, 42.2, 1), "minutes": i("Finish time in minutes", 4, 300)},
   ["What's my pace if I ran {distance_km} km in {minutes} minutes?",
    "Compute the pace per kilometre for {distance_km} km finished in {minutes} minutes."],
   par=("minutes",),
   out=("min_per_km", lambda a, r: _r2(a["minutes"] / a["distance_km"]), "Your pace is {r} minutes per km."))

# --- music
fn("music", "music.queue_track", "Add a song to the play queue.",
   {"title": s("Song title", SONGS), "artist": s("Artist", ARTISTS, opt=True)},
   ["Queue the song \"{title}\".", "Play \"{title}\" by {artist} next.", "Add {title} by {artist} to the queue."],
   par=("title",),
   out=("position", lambda a, r: r.randint(1, 12), "\"{title}\" is number {r} in the queue."))
fn("music", "setlist_lookup", "Find the songs an artist played live in a given year.",
   {"artist": s("Artist", ARTISTS), "year": i("Year", 1990, 2024)},
   ["What did {artist} play live in {year}?", "Find {artist}'s setlists from {year}.",
    "Show me the {year} concert setlists of {artist}."],
   par=("year", "artist"),
   out=("opener", lambda a, r: r.choice(SONGS), "In {year} {artist} usually opened with \"{r}\"."))
fn("music", "music.playlist_create", "Create a playlist from a list of songs.",
   {"name": s("Playlist name", PLAYLISTS), "songs": ls("Song titles", SONGS),
    "public": b("Visible to everyone", opt=True, default=False)},
   ["Create a playlist called \"{name}\" with {songs}.",
    ("Make a public playlist named {name} containing {songs}.", {"public": True}),
    ("Start a private playlist \"{name}\": {songs}.", {"public": False})],
   out=("playlist_id", lambda a, r: f"pl_{r.randint(1000, 9999)}", "Playlist \"{name}\" is ready."))
fn("music", "chord_notes_spell", "List the notes of a chord.",
   {"root": e("Root note", NOTES), "quality": e("Chord quality", ["major", "minor", "diminished", "augmented"])},
   ["Which notes are in a {root} {quality} chord?", "Spell the {root} {quality} triad.",
    "Name the notes of {root} {quality}."],
   par=("root",),
   out=("notes", lambda a, r: _chord(a["root"], a["quality"]), "{root} {quality} is {r}."))
fn("music", "tempo_to_ms", "Convert a tempo in beats per minute to milliseconds per note.",
   {"bpm": i("Beats per minute", 60, 200), "subdivision": ic("Notes per beat", [2, 3, 4, 8], opt=True, default=1)},
   ["How many milliseconds is one beat at {bpm} BPM?",
    "At {bpm} BPM, how long is each note if a beat is split into {subdivision}?",
    "Delay time in ms for {bpm} bpm?"],
   par=("bpm",),
   out=("ms", lambda a, r: _r2(60000 / a["bpm"] / a.get("subdivision", 1)), "Each note lasts {r} ms."))

# --- health
fn("health", "health.daily_water_target", "Estimate how much water a person should drink per day.",
   {"weight_kg": n("Body weight in kg", 40, 140, 1), "active_minutes": i("Exercise minutes per day", 10, 120, opt=True)},
   ["How much water should a {weight_kg} kg person drink a day?",
    "Daily water goal for someone weighing {weight_kg} kg who exercises {active_minutes} minutes a day?"],
   par=("weight_kg",),
   out=("litres", lambda a, r: _r2(a["weight_kg"] * 0.033 + a.get("active_minutes", 0) / 60 * 0.5),
        "Aim for about {r} litres a day."))
fn("health", "heart_rate_zone_calc", "Give the target heart-rate range for a training intensity.",
   {"age": i("Age in years", 16, 80), "intensity": e("Training intensity", ["light", "moderate", "hard"])},
   ["What's the {intensity} heart-rate zone for a {age}-year-old?",
    "Give me target heart rates for {intensity} training at age {age}.",
    "I'm {age}. What pulse should I keep for a {intensity} workout?"],
   par=("age", "intensity"),
   out=("bpm_range", lambda a, r: f"{(220 - a['age']) * 6 // 10}-{(220 - a['age']) * 8 // 10}",
        "Keep your heart rate around {r} bpm."))
fn("health", "health.activity_calories", "Estimate the calories burned by an activity.",
   {"activity": s("The activity", ACTIVITIES), "minutes": i("Duration in minutes", 10, 180),
    "weight_kg": n("Body weight in kg", 40, 140, 1)},
   ["How many calories does a {weight_kg} kg person burn {activity} for {minutes} minutes?",
    "Estimate the calories burned: {activity}, {minutes} min, body weight {weight_kg} kg."],
   par=("activity", "minutes"),
   out=("kcal", lambda a, r: round(a["minutes"] * a["weight_kg"] * r.uniform(0.05, 0.15)), "That burns about {r} kcal."))
fn("health", "sleep_cycle_planner", "Suggest a bedtime from a wake-up time and a number of sleep cycles.",
   {"wake_time": s("Wake-up time, HH:MM", _morning), "cycles": i("Sleep cycles of 90 minutes", 3, 6, opt=True,
                                                                 default=5)},
   ["When should I go to bed to wake up at {wake_time}?", "Bedtime for waking at {wake_time} after {cycles} sleep cycles?",
    "I need to be up at {wake_time}. What time should I sleep?"],
   par=("wake_time",),
   out=("bedtime", lambda a, r: _bedtime(a["wake_time"], a.get("cycles", 5)), "Go to bed around {r}."))
fn("health", "health.resting_metabolic_rate", "Estimate the calories a body burns at rest per day.",
   {"weight_kg": n("Body weight in kg", 40, 140, 1), "height_cm": i("Height in cm", 140, 205),
    "age": i("Age in years", 16, 90), "sex": e("Sex", ["female", "male"])},
   ["Estimate the BMR of a {age}-year-old {sex}, {height_cm} cm tall and {weight_kg} kg.",
    "What's the basal metabolic rate for a {sex} aged {age}, weight {weight_kg} kg, height {height_cm} cm?"],
   out=("kcal_per_day", lambda a, r: round(10 * a["weight_kg"] + 6.25 * a["height_cm"] - 5 * a["age"] + (
       5 if a["sex"] == "male" else -161)), "The resting burn is about {r} kcal a day."))

# --- devops
fn("devops", "fs.tail_lines", "Return the last lines of a file.",
   {"path": s("File path", FILES), "lines": i("How many lines", 5, 200, opt=True, default=10)},
   ["Show the end of {path}.", "Print the last {lines} lines of {path}.", "What are the final {lines} lines in {path}?"],
   par=("path",),
   out=("last_line", lambda a, r: r.choice(["INFO ready", "ERROR timeout after 30s", "done", "WARN disk 91% full"]),
        "The last line of {path} is: {r}"))
fn("devops", "service_restart", "Restart a service in an environment.",
   {"service": s("Service name", SERVICES), "environment": e("Environment", ["dev", "staging", "prod"])},
   ["Restart {service} in {environment}.", "Please bounce the {service} service on {environment}.",
    "The {service} service is stuck in {environment}. Restart it."],
   par=("service", "environment"),
   out=("status", lambda a, r: r.choice(["running", "running (took 12s)", "failed: health check"]),
        "{service} in {environment}: {r}."))
fn("devops", "disk_usage_report", "Report how much disk space a directory uses.",
   {"path": s("Directory", DIRS), "human_readable": b("Sizes like 1.2G instead of bytes", opt=True, default=False)},
   ["How much disk space does {path} use?", ("Show the size of {path} in human-readable units.",
                                             {"human_readable": True}),
    "Check the disk usage of {path}."],
   par=("path",),
   out=("bytes", lambda a, r: r.randint(10**6, 10**11), "{path} uses {r} bytes."))
fn("devops", "devops.scale_replicas", "Set the number of replicas of a deployment.",
   {"deployment": s("Deployment name", SERVICES), "replicas": i("Desired replicas", 0, 20)},
   ["Scale {deployment} to {replicas} replicas.", "Set the replica count of {deployment} to {replicas}.",
    "Run {replicas} copies of {deployment}."],
   par=("deployment",),
   out=("ready", lambda a, r: a["replicas"], "{deployment} now has {r} ready replicas."))
fn("devops", "archive_folder", "Compress a folder into an archive file.",
   {"folder": s("Folder to compress", DIRS), "format": e("Archive format", ["zip", "tar.gz"], opt=True, default="zip")},
   ["Compress the folder {folder}.", "Make a {format} archive of {folder}.", "Pack {folder} into a {format} file."],
   par=("folder",),
   out=("archive", lambda a, r: a["folder"].rstrip("/").split("/")[-1] + "." + r.choice(["zip", "tar.gz"]),
        "Created the archive {r}."))

# --- databases
fn("databases", "db.count_rows", "Count the rows of a table, optionally filtered.",
   {"table": s("Table name", TABLES), "where": s("SQL condition", CONDITIONS, opt=True)},
   ["How many rows are in the {table} table?", "Count rows in {table} where {where}.",
    "Number of records in {table} matching {where}?"],
   par=("table",),
   out=("count", lambda a, r: r.randint(0, 250000), "The {table} table has {r} matching rows."))
fn("databases", "db.export_table_csv", "Export a table to a CSV file.",
   {"table": s("Table name", TABLES), "output_path": s("CSV file to write", CSV_PATHS),
    "columns": ls("Columns to keep", COLUMNS, opt=True)},
   ["Export {table} to {output_path}.", "Dump the {columns} columns of {table} into {output_path}.",
    "Save the table {table} as CSV at {output_path}, with only the columns {columns}."],
   par=("table",),
   out=("rows_written", lambda a, r: r.randint(1, 90000), "Wrote {r} rows of {table} to {output_path}."))
fn("databases", "backup_database_now", "Start a backup of a database.",
   {"database": s("Database name", DATABASES), "compress": b("Compress the dump", opt=True, default=False)},
   ["Back up the {database} database.", ("Take a compressed backup of {database}.", {"compress": True}),
    "Run a backup of {database} now."],
   par=("database",),
   out=("backup_file", lambda a, r: f"{a['database']}_{r.randint(1000, 9999)}.dump", "Backup saved as {r}."))
fn("databases", "db.lookup_record", "Fetch one row of a table by its id.",
   {"table": s("Table name", TABLES), "record_id": i("Row id", 1, 99999)},
   ["Fetch record {record_id} from {table}.", "Show me row {record_id} of the {table} table.",
    "Look up the {table} entry with id {record_id}."],
   par=("record_id",),
   out=("found", lambda a, r: r.random() < 0.8, "Record {record_id} found: {r}."))

# --- maps
fn("maps", "maps.route_duration", "Estimate the travel time of a route between two places.",
   {"origin": s("Start", PLACES), "destination": s("End", PLACES),
    "mode": e("How to travel", ["driving", "walking", "cycling", "transit"], opt=True, default="driving")},
   ["How long does it take to get from {origin} to {destination}?",
    "Travel time from {origin} to {destination} by {mode}?", "Plan a {mode} route from {origin} to {destination}."],
   par=("destination",),
   out=("minutes", lambda a, r: r.randint(4, 95), "It takes about {r} minutes from {origin} to {destination}."))
fn("maps", "nearby_places_search", "Find places of a category in a city.",
   {"category": s("Kind of place", CATEGORIES), "city": s("City", CITIES),
    "radius_km": n("Search radius in km", 0.5, 15, 1, opt=True)},
   ["Find {category} in {city}.", "Any {category} within {radius_km} km of central {city}?", "Show {category} near {city}."],
   par=("city", "category"),
   out=("count", lambda a, r: r.randint(0, 30), "I found {r} {category} in {city}."))
fn("maps", "address_to_coordinates", "Return the latitude and longitude of a street address.",
   {"address": s("Street address", ADDRESSES)},
   ["Get the coordinates of {address}.", "What are the latitude and longitude for {address}?",
    "Geocode this address: {address}"],
   out=("lat_lon", lambda a, r: f"{r.uniform(-50, 65):.4f}, {r.uniform(-120, 175):.4f}", "It is at {r}."))
fn("maps", "maps.city_distance", "Compute the straight-line distance between two cities.",
   {"city_a": s("First city", CITIES), "city_b": s("Second city", CITIES), "unit": e("Unit", ["km", "mi"], opt=True)},
   ["How far is {city_a} from {city_b}?", "Distance between {city_a} and {city_b} in {unit}?",
    "Straight-line distance from {city_a} to {city_b}, please."],
   par=("city_b",),
   out=("distance", lambda a, r: f"{r.randint(40, 18000)} {a.get('unit', 'km')}", "{city_a} and {city_b} are {r} apart."))
fn("maps", "local_time_in_city", "Tell the current local time in a city.",
   {"city": s("City", CITIES)},
   ["What time is it in {city} right now?", "Current local time in {city}?", "Tell me the time in {city}."],
   par=("city",),
   out=("time", lambda a, r: _clock(r), "It's {r} in {city}."))

# --- education
fn("education", "edu.quiz_generate", "Write a multiple-choice quiz on a topic.",
   {"topic": s("Topic", SUBJECTS), "questions": i("Number of questions", 3, 20),
    "difficulty": e("Difficulty", ["easy", "medium", "hard"], opt=True)},
   ["Make a {questions}-question quiz on {topic}.", "Create a {difficulty} quiz about {topic} with {questions} questions.",
    "I need {questions} {difficulty} questions on {topic}."],
   par=("topic",),
   out=("quiz_id", lambda a, r: f"quiz_{r.randint(100, 999)}", "Your {topic} quiz is ready."))
fn("education", "course_catalog_search", "Find courses on a subject.",
   {"subject": s("Subject", SUBJECTS), "level": e("Level", ["beginner", "intermediate", "advanced"], opt=True)},
   ["Find courses on {subject}.", "Any {level} courses in {subject}?", "Show me {level}-level classes in {subject}."],
   par=("subject",),
   out=("courses", lambda a, r: r.randint(1, 25), "There are {r} courses on {subject}."))
fn("education", "edu.grade_average", "Compute the average of a list of scores.",
   {"scores": ln("The scores", 40, 100, k=(3, 6))},
   ["Average these test scores: {scores}.", "What's the mean of my grades {scores}?",
    "Compute the grade average for {scores}."],
   out=("average", lambda a, r: _r2(sum(a["scores"]) / len(a["scores"])), "Your average is {r}."))
fn("education", "flashcards_make", "Create study flashcards for a list of terms.",
   {"terms": ls("Terms to learn", VOCAB), "language": s("Language of the cards", LANGUAGES, opt=True)},
   ["Make flashcards for {terms}.", "Create {language} flashcards for the words {terms}.",
    "I'm studying {terms}. Turn them into flashcards."],
   out=("cards", lambda a, r: len(a["terms"]), "Created {r} flashcards."))
fn("education", "edu.letter_grade_lookup", "Convert a percentage score to a letter grade.",
   {"percent": n("Score in percent", 40, 100, 1)},
   ["What letter grade is {percent}%?", "Convert a score of {percent} percent to a letter grade.",
    "I got {percent}% on the exam. Which letter is that?"],
   par=("percent",),
   out=("grade", lambda a, r: "ABCDF"[min(4, max(0, int((99.999 - a["percent"]) // 10)))], "That is a {r}."))

# --- cooking
fn("cooking", "kitchen.recipe_ideas", "Find recipe ideas that use an ingredient.",
   {"ingredient": s("Main ingredient", INGREDIENTS), "max_minutes": i("Longest cooking time", 10, 90, opt=True),
    "vegetarian": b("Only vegetarian recipes", opt=True, default=False)},
   ["Find recipes with {ingredient}.", "Something to cook with {ingredient} in under {max_minutes} minutes?",
    ("Vegetarian recipes using {ingredient}, please.", {"vegetarian": True}),
    ("Give me a vegetarian dish with {ingredient} that takes at most {max_minutes} minutes.", {"vegetarian": True})],
   par=("ingredient",),
   out=("top_recipe", lambda a, r: f"{a['ingredient']} {r.choice(['curry', 'salad', 'stew', 'tacos', 'bake'])}",
        "Try a {r}."))
fn("cooking", "kitchen.scale_recipe", "Rescale a recipe's quantities to a new number of servings.",
   {"dish": s("The dish", DISHES), "from_servings": i("Servings the recipe makes", 1, 8),
    "to_servings": i("Servings wanted", 2, 30)},
   ["Scale my {dish} recipe from {from_servings} to {to_servings} servings.",
    "I have a {dish} recipe for {from_servings}. Adjust it for {to_servings} people."],
   par=("to_servings",),
   out=("factor", lambda a, r: _r2(a["to_servings"] / a["from_servings"]), "Multiply every quantity by {r}."))
fn("cooking", "roast_cooking_time", "Estimate the oven time for a roast by meat and weight.",
   {"meat": e("Kind of meat", ["chicken", "beef", "pork", "lamb", "turkey"]), "weight_kg": n("Weight in kg", 0.8, 8, 1)},
   ["How long should I roast a {weight_kg} kg {meat}?", "Roasting time for {meat} weighing {weight_kg} kg?",
    "I've got {weight_kg} kg of {meat} for the oven. How long?"],
   par=("weight_kg",),
   out=("minutes", lambda a, r: round(a["weight_kg"] * 45 + 20), "Roast it for about {r} minutes."))
fn("cooking", "kitchen.substitute_ingredient", "Suggest a replacement for an ingredient.",
   {"ingredient": s("Ingredient to replace", SUBSTITUTES),
    "diet": e("Dietary need", ["vegan", "gluten-free", "dairy-free"], opt=True)},
   ["What can I use instead of {ingredient}?", "Suggest a {diet} substitute for {ingredient}.",
    "I'm out of {ingredient}. What's a good replacement?"],
   par=("ingredient",),
   out=("substitute", lambda a, r: r.choice(["applesauce", "oat milk", "coconut oil", "yogurt", "maple syrup"]),
        "Use {r} instead of {ingredient}."))
fn("cooking", "nutrition_facts_lookup", "Give the calories and macronutrients of a food portion.",
   {"food": s("Food", FOODS), "grams": i("Portion in grams", 10, 500)},
   ["Nutrition facts for {grams} g of {food}?", "How many calories are in {grams} grams of {food}?",
    "Show the macros of a {grams}g portion of {food}."],
   par=("food", "grams"),
   out=("kcal", lambda a, r: round(a["grams"] * r.uniform(0.5, 5.8)), "{grams} g of {food} has about {r} kcal."))


def _factors(x: int) -> list[int]:
    out, d = [], 2
    while d * d <= x:
        while x % d == 0:
            out.append(d)
            x //= d
        d += 1
    return out + ([x] if x > 1 else [])


def _median(xs: list) -> float:
    ys = sorted(xs)
    mid = len(ys) // 2
    return ys[mid] if len(ys) % 2 else (ys[mid - 1] + ys[mid]) / 2


def _fib(k: int) -> int:
    a, b_ = 0, 1
    for _ in range(k - 1):
        a, b_ = b_, a + b_
    return a


def _temp(v: float, src: str, dst: str) -> float:
    c = {"celsius": v, "fahrenheit": (v - 32) * 5 / 9, "kelvin": v - 273.15}[src]
    return {"celsius": c, "fahrenheit": c * 9 / 5 + 32, "kelvin": c + 273.15}[dst]


def _clean(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def _chord(root: str, quality: str) -> str:
    steps = {"major": (0, 4, 7), "minor": (0, 3, 7), "diminished": (0, 3, 6), "augmented": (0, 4, 8)}[quality]
    k = NOTES.index(root)
    return "-".join(NOTES[(k + st) % 12] for st in steps)


def _later(clock: str, minutes: int) -> str:
    h, m = map(int, clock.split(":"))
    t = (h * 60 + m + minutes) % (24 * 60)
    return f"{t // 60:02d}:{t % 60:02d}"


def _bedtime(wake: str, cycles: int) -> str:
    h, m = map(int, wake.split(":"))
    t = (h * 60 + m - cycles * 90 - 15) % (24 * 60)
    return f"{t // 60:02d}:{t % 60:02d}"


# --------------------------------------------------------------------------- rendering


def _show(v: Any, brackets: bool = False) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        parts = [_show(x) for x in v]
        if brackets:
            return "[" + ", ".join(parts) + "]"
        return _join(parts)
    return str(v)


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _render(text: str, shown: dict[str, str]) -> str:
    return _FIELD.sub(lambda m: shown[m.group(1)], text)


def _lower_first(text: str) -> str:
    """For a request that continues a sentence ("... Also, find ..."): lowercase a leading ordinary word."""
    word = re.match(r"[A-Za-z]*", text).group(0)
    return text[0].lower() + text[1:] if word and word != "I" and word[1:] == word[1:].lower() else text


def _draw(f: Fn, used: set[str], rng: random.Random, avoid: list[Any] = ()) -> dict[str, Any]:
    """Values for the parameters a phrasing names; scalars differ from each other (origin != destination)."""
    vals: dict[str, Any] = {}
    for k in f.params:
        if k not in used:
            continue
        for _ in range(30):
            v = f.params[k].draw(rng)
            if isinstance(v, list) or (v not in vals.values() and v not in avoid):
                break
        vals[k] = v
    return vals


def _args(f: Fn, vals: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
    return {k: (vals[k] if k in vals else fixed[k]) for k in f.params if k in vals or k in fixed}


def _request(f: Fn, rng: random.Random, template: tuple[str, dict] | None = None) -> tuple[str, dict]:
    """(request text, call arguments) for one call of ``f``."""
    text, fixed = template or rng.choice(f.templates)
    vals = _draw(f, set(_FIELD.findall(text)), rng)
    brackets = rng.random() < 0.4
    return _render(text, {k: _show(v, brackets) for k, v in vals.items()}), _args(f, vals, fixed)


def _polish(text: str, rng: random.Random) -> str:
    x = rng.random()
    if x < 0.08:
        return rng.choice(["Hi! ", "Hello. ", "Could you help me? ", "Quick question. "]) + text
    if x < 0.14:
        return text + rng.choice([" Thanks!", " Thank you.", " Thanks in advance."])
    return text


def _call(k: int, name: str, args: dict) -> dict:
    return {"id": f"call_{k}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


def _calls_msg(calls: list[tuple[str, dict]]) -> dict:
    return {"role": "assistant", "content": None,
            "tool_calls": [_call(k, name, args) for k, (name, args) in enumerate(calls, 1)]}


def _distractors(f: Fn, k: int, rng: random.Random, same_domain: float = 0.5, exclude: tuple[str, ...] = ()) -> list:
    """``k`` other functions: each from ``f``'s domain with probability ``same_domain`` (close in meaning)."""
    out: list[Fn] = []
    for _ in range(k):
        near = [g for g in CATALOG if g.domain == f.domain and g is not f and g not in out and g.name not in exclude]
        far = [g for g in CATALOG if g.domain != f.domain and g not in out and g.name not in exclude]
        out.append(rng.choice(near if near and rng.random() < same_domain else far))
    return out


def _tools(fns: list[Fn], rng: random.Random) -> list[dict]:
    fns = list(fns)
    rng.shuffle(fns)
    return [g.tool() for g in fns]


# --------------------------------------------------------------------------- shapes


def _single(rng: random.Random) -> tuple[list[Fn], list[dict]]:
    f = rng.choice(CATALOG)
    text, args = _request(f, rng)
    return [f], [{"role": "user", "content": _polish(text, rng)}, _calls_msg([(f.name, args)])]


def _multi(rng: random.Random) -> tuple[list[Fn], list[dict]]:
    f = rng.choice(CATALOG)
    text, args = _request(f, rng)
    fns = [f, *_distractors(f, rng.randint(1, 3), rng)]
    return fns, [{"role": "user", "content": _polish(text, rng)}, _calls_msg([(f.name, args)])]


def _parallel(rng: random.Random) -> tuple[list[Fn], list[dict]]:
    x = rng.random()
    if x < 0.25:  # two different functions for a two-part request
        f = rng.choice(CATALOG)
        g = rng.choice([h for h in CATALOG if h.domain != f.domain])
        (t1, a1), (t2, a2) = _request(f, rng), _request(g, rng)
        text = t1 + " " + rng.choice(["Also, ", "And ", "Then ", "After that, "]) + _lower_first(t2)
        fns = [f, g, *_distractors(f, rng.randint(0, 1), rng, exclude=(g.name,))]
        return fns, [{"role": "user", "content": text}, _calls_msg([(f.name, a1), (g.name, a2)])]
    f = rng.choice([h for h in CATALOG if h.par])
    fns = [f, *_distractors(f, rng.choice([0, 0, 1, 2]), rng)]
    if x < 0.45:  # the same function twice, asked in two sentences
        (t1, a1), (t2, a2) = _request(f, rng), _request(f, rng)
        if a1 == a2:
            return _parallel(rng)
        text = t1 + " " + rng.choice(["Also, ", "And ", "Then "]) + _lower_first(t2)
        return fns, [{"role": "user", "content": text}, _calls_msg([(f.name, a1), (f.name, a2)])]
    # one sentence naming several values: "... for Paris and Rome", "... 20 and 15 minutes, respectively"
    varied = [rng.choice(f.par)]
    if len(f.par) > 1 and rng.random() < 0.5:
        varied = list(f.par[:2])
    options = [t for t, used in zip(f.templates, f.fields, strict=True) if set(varied) <= used
               and (len(varied) == 1 or not re.search(r"[.?!:] ", t[0]))]  # "respectively" ends one sentence
    if not options:
        varied = varied[:1]
        options = [t for t, used in zip(f.templates, f.fields, strict=True) if varied[0] in used]
    text, fixed = rng.choice(options)
    vals = _draw(f, set(_FIELD.findall(text)), rng)
    k = rng.choice([2, 2, 3])
    series = {}
    for p in varied:
        seq = [vals[p]]
        others = [v for q, v in vals.items() if q != p]
        for _ in range(60):
            if len(seq) == k:
                break
            v = f.params[p].draw(rng)
            if v not in seq and v not in others:
                seq.append(v)
        series[p] = seq
    k = min(len(seq) for seq in series.values())
    if k < 2:
        return _parallel(rng)
    for p in varied:
        quoted = re.compile(r"([\"'])\{" + p + r"\}\1")
        text = quoted.sub(lambda m, p=p: _join([m.group(1) + _show(v) + m.group(1) for v in series[p][:k]]), text)
        text = text.replace("{" + p + "}", _join([_show(v) for v in series[p][:k]]))
    brackets = rng.random() < 0.4
    text = _render(text, {q: _show(v, brackets) for q, v in vals.items() if q not in varied})
    if len(varied) > 1:
        text = text[:-1] + ", respectively" + text[-1] if text[-1] in ".?!" else text + ", respectively."
    calls = [(f.name, _args(f, {**vals, **{p: series[p][j] for p in varied}}, fixed)) for j in range(k)]
    return fns, [{"role": "user", "content": _polish(text, rng)}, _calls_msg(calls)]


def _none(rng: random.Random) -> tuple[list[Fn], list[dict]]:
    if rng.random() < 0.35:  # small talk or general knowledge, with some tools on offer
        question, answer = rng.choice(CHAT)
        fns = rng.sample(CATALOG, rng.randint(1, 3))
        return fns, [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    wanted = rng.choice(CATALOG)  # the request needs a tool that is not offered
    text, _ = _request(wanted, rng)
    fns = _distractors(wanted, rng.randint(1, 3), rng, same_domain=0.3)
    if len(fns) == 1:
        g = fns[0]
        answer = rng.choice([
            f"I can't do that with the available tool: {g.name} can only {g.summary()}.",
            f"Sorry, the only tool here, {g.name}, cannot help with that; it can only {g.summary()}.",
            f"None of my tools can handle that request. {g.name} is only able to {g.summary()}.",
        ])
    else:
        names = _join([g.name for g in fns])
        answer = rng.choice([
            f"None of the available tools ({names}) can do that, so I can't help with this request.",
            "Sorry, that is outside what my tools can do, so I won't call any of them.",
            f"I don't have a tool for that: {names} do something else.",
        ])
    return fns, [{"role": "user", "content": _polish(text, rng)}, {"role": "assistant", "content": answer}]


def _multistep(rng: random.Random) -> tuple[list[Fn], list[dict]]:
    f = rng.choice([h for h in CATALOG if h.out])
    text, args = _request(f, rng)
    key, value, say = f.out
    result = value(args, rng)
    shown = {k: _show(v) for k, v in args.items()}
    answer = _render(say, {**shown, "r": _show(result)})
    fns = [f, *_distractors(f, rng.choice([0, 0, 1]), rng)]
    return fns, [{"role": "user", "content": _polish(text, rng)}, _calls_msg([(f.name, args)]),
                 {"role": "tool", "tool_call_id": "call_1", "content": json.dumps({key: result})},
                 {"role": "assistant", "content": answer}]


BUILDERS = {"single": _single, "multi": _multi, "parallel": _parallel, "none": _none, "multistep": _multistep}


def _quotas(n: int) -> list[str]:
    """Exactly ``n`` shape names in the SHAPES shares (largest remainder)."""
    raw = [(name, n * share) for name, share in SHAPES]
    counts = {name: int(x) for name, x in raw}
    for name, _ in sorted(raw, key=lambda t: -(t[1] - int(t[1])))[: n - sum(counts.values())]:
        counts[name] += 1
    return [name for name, _ in SHAPES for _ in range(counts[name])]


def generate(n: int, seed: int) -> list[dict]:
    """``n`` traces (OpenAI layout), a pure function of ``n`` and ``seed``."""
    rng = random.Random(seed)
    shapes = _quotas(n)
    rng.shuffle(shapes)
    out = []
    for k, shape in enumerate(shapes):
        fns, messages = BUILDERS[shape](rng)
        out.append({"id": f"tooltrace-{seed}-{k:05d}", "tools": _tools(fns, rng), "messages": messages})
    return out


def shape_of(record: dict) -> str:
    """The shape of a generated trace, read from its structure."""
    messages = record["messages"]
    if any(m["role"] == "tool" for m in messages):
        return "multistep"
    calls = [c for m in messages if m["role"] == "assistant" for c in m.get("tool_calls") or []]
    if not calls:
        return "none"
    if len(calls) > 1:
        return "parallel"
    return "single" if len(record["tools"]) == 1 else "multi"


# --------------------------------------------------------------------------- overlap checks


def norm_name(name: str) -> str:
    """A function name as compared for overlap: case and dots-versus-underscores ignored."""
    return name.lower().replace(".", "_")


def bfcl_reference() -> tuple[set[str], set[str]] | None:
    """(every function name, every user question) in the installed bfcl_eval data; None if not installed."""
    spec = importlib.util.find_spec("bfcl_eval")  # without importing the package
    if spec is None or not spec.submodule_search_locations:
        return None
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    names: set[str] = set()
    questions: set[str] = set()
    for path in sorted(data.glob("BFCL_v4_*.json")) + sorted((data / "multi_turn_func_doc").glob("*.json")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue  # BFCL_v4_format_sensitivity.json is one pretty-printed object of ids, not JSON lines
            if not isinstance(item, dict):
                continue
            if isinstance(item.get("name"), str) and "parameters" in item:  # a multi-turn function doc
                names.add(item["name"])
            for function in item.get("function") or []:
                if isinstance(function, dict) and isinstance(function.get("name"), str):
                    names.add(function["name"])
            for turn in item.get("question") or []:
                for message in turn if isinstance(turn, list) else []:
                    if isinstance(message, dict) and isinstance(message.get("content"), str):
                        questions.add(message["content"])
    return names, questions


def eval_tool_names() -> set[str]:
    """Tool names of data/eval/tool-calls.jsonl (the project's own held-out tool tasks)."""
    names: set[str] = set()
    if EVAL_TOOLS.exists():
        for line in EVAL_TOOLS.read_text(encoding="utf-8").splitlines():
            if line.strip():
                for t in json.loads(line).get("tools") or []:
                    names.add((t.get("function") or t)["name"])
    return names


def _norm_text(text: str) -> str:
    return " ".join(text.lower().split())


def check_overlap(records: list[dict]) -> str:
    """Raise AssertionError on any shared name or question; return a line saying what was checked."""
    ours = {norm_name(f.name): f.name for f in CATALOG}
    assert len(ours) == len(CATALOG), "two catalogue functions share a name"
    clash = sorted(ours[k] for k in ours.keys() & {norm_name(x) for x in eval_tool_names()})
    assert not clash, f"function names shared with {EVAL_TOOLS}: {clash}"
    ref = bfcl_reference()
    if ref is None:
        return "bfcl_eval is not installed: skipped the check against BFCL names and questions"
    names, questions = ref
    clash = sorted(ours[k] for k in ours.keys() & {norm_name(x) for x in names})
    assert not clash, f"function names shared with BFCL: {clash}"
    asked = {_norm_text(q) for q in questions}
    same = [m["content"] for r in records for m in r["messages"] if m["role"] == "user"
            and _norm_text(m["content"]) in asked]
    assert not same, f"requests equal to BFCL questions: {same[:5]}"
    return (f"no overlap: {len(CATALOG)} functions vs {len(names)} BFCL names and {len(eval_tool_names())} "
            f"data/eval tools; {len(records)} requests vs {len(questions)} BFCL questions")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="JSONL file to write")
    ap.add_argument("--n", type=int, default=600, help="number of traces")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    records = generate(args.n, args.seed)
    print(check_overlap(records), file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    shapes = Counter(shape_of(r) for r in records)
    used = {t["function"]["name"] for r in records for t in r["tools"]}
    chars = sum(len(json.dumps(r, ensure_ascii=False)) for r in records) / max(1, len(records))
    print(json.dumps({"out": str(args.out), "traces": len(records), "catalog_functions": len(CATALOG),
                      "domains": len({f.domain for f in CATALOG}), "functions_used": len(used),
                      "shapes": {name: shapes[name] for name, _ in SHAPES}, "mean_chars": round(chars)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
