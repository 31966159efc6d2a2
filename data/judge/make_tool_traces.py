"""Writes data/judge/tool-traces.jsonl: synthetic but well-formed agent traces (OpenAI layout) for
tool-use judge pairs, since the five sample trace files hold too few traces to train on.

Each trace offers 3-5 tools from a pool of 16 (coding, repository, web, office, data), asks for
something that one or two of them do, makes the call(s) with arguments taken from the request,
gets a tool result and answers in plain text. About a fifth of the traces ask something that
needs no tool, and the assistant answers directly (the source of ``call_instead_of_answer``
pairs). The output is a pure function of the seed:

    .venv/bin/python data/judge/make_tool_traces.py            # rewrites the shipped file
    .venv/bin/python data/judge/make_tool_traces.py --check    # exit 1 if the file differs
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

OUT = Path(__file__).with_name("tool-traces.jsonl")


def _p(type_, description, **extra):
    return {"type": type_, "description": description, **extra}


# name: (description, properties, required, [(request template, argument builder, result, answer)])
TOOLS = {
    "read_file": ("Read a file of the repository.",
                  {"path": _p("string", "Path relative to the repository root"),
                   "start_line": _p("integer", "First line, 1-based"), "end_line": _p("integer", "Last line")},
                  ["path"]),
    "run_tests": ("Run tests and return the failures.",
                  {"path": _p("string", "Test file or folder"), "keyword": _p("string", "Only tests matching this"),
                   "verbose": _p("boolean", "Print every test")}, ["path"]),
    "search_code": ("Search the repository for a regular expression.",
                    {"query": _p("string", "Regular expression"), "file_glob": _p("string", "Limit to these files"),
                     "max_results": _p("integer", "At most this many hits")}, ["query"]),
    "write_file": ("Create or overwrite a file.",
                   {"path": _p("string", "Path relative to the repository root"),
                    "content": _p("string", "The whole new content")}, ["path", "content"]),
    "git_commit": ("Commit the staged changes.",
                   {"message": _p("string", "Commit message"), "all": _p("boolean", "Stage every tracked change first")},
                   ["message"]),
    "install_package": ("Install a Python package into the project environment.",
                        {"name": _p("string", "Package name on PyPI"), "version": _p("string", "Version specifier")},
                        ["name"]),
    "http_get": ("Fetch a URL and return the body.",
                 {"url": _p("string", "Absolute URL"), "timeout": _p("number", "Seconds")}, ["url"]),
    "get_weather": ("Current weather for a city.",
                    {"city": _p("string", "City name"), "unit": _p("string", "Temperature unit", enum=["celsius", "fahrenheit"])},
                    ["city"]),
    "convert_currency": ("Convert an amount between currencies at today's rate.",
                         {"amount": _p("number", "Amount to convert"), "from_currency": _p("string", "ISO code"),
                          "to_currency": _p("string", "ISO code")}, ["amount", "from_currency", "to_currency"]),
    "send_email": ("Send an email.",
                   {"to": _p("string", "Recipient address"), "subject": _p("string", "Subject line"),
                    "body": _p("string", "Plain-text body")}, ["to", "subject", "body"]),
    "schedule_meeting": ("Put a meeting in the calendar.",
                         {"title": _p("string", "Meeting title"), "start": _p("string", "ISO 8601 start time"),
                          "duration_minutes": _p("integer", "Length in minutes"),
                          "attendees": _p("array", "Email addresses", items={"type": "string"})},
                         ["title", "start", "duration_minutes"]),
    "create_issue": ("Open an issue in the tracker.",
                     {"title": _p("string", "Issue title"), "body": _p("string", "Description"),
                      "labels": _p("array", "Labels", items={"type": "string"})}, ["title"]),
    "query_database": ("Run a read-only SQL query.",
                       {"sql": _p("string", "One SELECT statement"), "limit": _p("integer", "Row limit")}, ["sql"]),
    "get_stock_price": ("Latest price of a stock.",
                        {"symbol": _p("string", "Ticker symbol"), "exchange": _p("string", "Exchange code")}, ["symbol"]),
    "translate_text": ("Translate text into another language.",
                       {"text": _p("string", "Text to translate"), "target_language": _p("string", "ISO 639-1 code")},
                       ["text", "target_language"]),
    "list_directory": ("List the entries of a folder.",
                       {"path": _p("string", "Folder path"), "recursive": _p("boolean", "Descend into subfolders")},
                       ["path"]),
}

FILES = ["src/parser.py", "src/cache.py", "app/models/user.py", "lib/utils/strings.py", "server/routes.py",
         "pkg/config/loader.py", "src/scheduler.py", "tools/cli.py"]
MODULES = ["parser", "cache", "user", "strings", "routes", "loader", "scheduler", "cli"]
CITIES = ["Lisbon", "Osaka", "Nairobi", "Toronto", "Krakow", "Santiago", "Hanoi", "Reykjavik"]
PEOPLE = ["ana@example.com", "li.wei@example.org", "sam@example.net", "priya@example.com", "omar@example.org"]
PACKAGES = [("httpx", ">=0.27"), ("pydantic", "==2.8.2"), ("rich", None), ("polars", ">=1.0"), ("orjson", None)]
SYMBOLS = [("AAPL", "NASDAQ"), ("SAP", "XETRA"), ("7203", "TSE"), ("SHOP", "TSX"), ("VOD", "LSE")]
CURRENCIES = ["EUR", "USD", "JPY", "GBP", "BRL", "INR", "CAD"]
LANGS = [("German", "de"), ("Japanese", "ja"), ("Spanish", "es"), ("French", "fr"), ("Portuguese", "pt")]


def _task(rng: random.Random, name: str):
    """(user request, arguments, tool result, final answer) for one call of `name`."""
    if name == "read_file":
        f = rng.choice(FILES)
        if rng.random() < 0.5:
            a, b = sorted(rng.sample(range(1, 120), 2))
            return (f"Show me lines {a} to {b} of {f}.", {"path": f, "start_line": a, "end_line": b},
                    f"{a}: def load(path):\n{a + 1}:     return open(path).read()", f"Lines {a}-{b} of {f} define `load`, which reads the whole file.")
        return (f"What is in {f}?", {"path": f}, "import os\n\nDEFAULT_TIMEOUT = 30\n", f"{f} imports os and sets DEFAULT_TIMEOUT to 30.")
    if name == "run_tests":
        m = rng.choice(MODULES)
        if rng.random() < 0.5:
            return (f"Run only the tests about {m} in tests/ and be verbose.", {"path": "tests/", "keyword": m, "verbose": True},
                    f"tests/test_{m}.py::test_{m}_roundtrip PASSED\n1 passed", f"The {m} tests pass (1 test).")
        return (f"Do the tests in tests/test_{m}.py pass?", {"path": f"tests/test_{m}.py"},
                f"FAILED tests/test_{m}.py::test_empty - IndexError: list index out of range\n1 failed, 6 passed",
                "No: test_empty fails with an IndexError; the other 6 pass.")
    if name == "search_code":
        word = rng.choice(["TODO", "deprecated", "retry", "lru_cache", "subprocess.run", "os.environ"])
        if rng.random() < 0.5:
            n = rng.choice([5, 10, 20])
            return (f"Find at most {n} places in the Python files that mention {word}.",
                    {"query": word, "file_glob": "*.py", "max_results": n},
                    f"src/cache.py:12: {word}\nsrc/parser.py:40: {word}", f"Two places mention {word}: src/cache.py line 12 and src/parser.py line 40.")
        return (f"Where do we use {word}?", {"query": word}, f"server/routes.py:88: {word}", f"Only server/routes.py (line 88) uses {word}.")
    if name == "write_file":
        f = rng.choice(["README.md", "docs/usage.md", ".editorconfig", "CHANGELOG.md"])
        text = rng.choice(["# Project\n\nRun `make test`.\n", "root = true\n", "## 1.2.0\n- Faster parser.\n"])
        return (f"Replace {f} with exactly this:\n{text}", {"path": f, "content": text}, "written", f"{f} now holds the new text.")
    if name == "git_commit":
        msg = rng.choice(["Fix off-by-one in the pager", "Add retry to the HTTP client", "Document the cache settings"])
        if rng.random() < 0.5:
            return (f"Commit all my changes with the message \"{msg}\".", {"message": msg, "all": True}, "[main 3f2a9c1] " + msg, "Committed as 3f2a9c1.")
        return (f"Commit what is staged as \"{msg}\".", {"message": msg}, "[main 9b1d0e4] " + msg, "Committed as 9b1d0e4.")
    if name == "install_package":
        pkg, ver = rng.choice(PACKAGES)
        if ver:
            return (f"Install {pkg} {ver}.", {"name": pkg, "version": ver}, f"Successfully installed {pkg}", f"{pkg} is installed.")
        return (f"Add {pkg} to the environment.", {"name": pkg}, f"Successfully installed {pkg}", f"{pkg} is installed.")
    if name == "http_get":
        url = rng.choice(["https://api.example.com/v1/status", "https://example.org/robots.txt", "https://status.example.net/health"])
        if rng.random() < 0.5:
            t = rng.choice([2.5, 5.0, 10.0])
            return (f"Fetch {url} but give up after {t} seconds.", {"url": url, "timeout": t}, '{"status": "ok"}', f"{url} answers that the status is ok.")
        return (f"What does {url} return?", {"url": url}, '{"status": "degraded"}', "It reports the status as degraded.")
    if name == "get_weather":
        c = rng.choice(CITIES)
        if rng.random() < 0.5:
            u = rng.choice(["celsius", "fahrenheit"])
            return (f"What's the weather in {c} in {u}?", {"city": c, "unit": u}, '{"temp": 21, "sky": "clear"}', f"It is 21 degrees {u} and clear in {c}.")
        return (f"Is it raining in {c} right now?", {"city": c}, '{"temp": 14, "sky": "light rain"}', f"Yes, light rain in {c}, 14 degrees.")
    if name == "convert_currency":
        a, b = rng.sample(CURRENCIES, 2)
        amount = rng.choice([12.5, 100, 249.99, 1800, 75])
        return (f"How much is {amount} {a} in {b}?", {"amount": amount, "from_currency": a, "to_currency": b},
                '{"result": 93.1}', f"{amount} {a} is about 93.1 {b} at today's rate.")
    if name == "send_email":
        to = rng.choice(PEOPLE)
        subject = rng.choice(["Release notes", "Lunch on Friday", "Build is green again"])
        body = rng.choice(["The new release is out.", "Are you free at noon?", "The flaky test is fixed."])
        return (f"Email {to} with the subject \"{subject}\" saying: {body}", {"to": to, "subject": subject, "body": body},
                "sent", f"Sent to {to}.")
    if name == "schedule_meeting":
        title = rng.choice(["Design review", "Sprint planning", "1:1"])
        day = rng.randint(1, 28)
        start = f"2026-12-{day:02d}T{rng.choice([9, 10, 14, 16])}:00:00"
        mins = rng.choice([15, 30, 45, 60])
        if rng.random() < 0.5:
            who = rng.sample(PEOPLE, 2)
            return (f"Book a {mins}-minute \"{title}\" at {start} with {who[0]} and {who[1]}.",
                    {"title": title, "start": start, "duration_minutes": mins, "attendees": who}, "booked", "The meeting is booked and both are invited.")
        return (f"Block {mins} minutes for \"{title}\" starting {start}.", {"title": title, "start": start, "duration_minutes": mins},
                "booked", "It is in the calendar.")
    if name == "create_issue":
        title = rng.choice(["Crash when the config file is empty", "Docs link is broken", "Slow startup on Windows"])
        if rng.random() < 0.5:
            label = rng.choice(["bug", "docs", "performance"])
            return (f"Open an issue titled \"{title}\" labelled {label}.", {"title": title, "labels": [label]}, '{"number": 412}', "Opened issue #412.")
        return (f"File a ticket: {title}.", {"title": title}, '{"number": 57}', "Opened issue #57.")
    if name == "query_database":
        table = rng.choice(["orders", "users", "invoices"])
        if rng.random() < 0.5:
            n = rng.choice([5, 10, 50])
            return (f"Show the {n} newest rows of {table}.", {"sql": f"SELECT * FROM {table} ORDER BY created_at DESC", "limit": n},
                    "id | created_at\n981 | 2026-11-27", f"The newest row in {table} is id 981 from 2026-11-27.")
        return (f"How many rows does {table} have?", {"sql": f"SELECT COUNT(*) FROM {table}"}, "count\n1534", f"{table} has 1534 rows.")
    if name == "get_stock_price":
        sym, ex = rng.choice(SYMBOLS)
        if rng.random() < 0.5:
            return (f"Price of {sym} on {ex}?", {"symbol": sym, "exchange": ex}, '{"price": 187.2}', f"{sym} trades at 187.2 on {ex}.")
        return (f"What is {sym} trading at?", {"symbol": sym}, '{"price": 42.05}', f"{sym} is at 42.05.")
    if name == "translate_text":
        lang, code = rng.choice(LANGS)
        text = rng.choice(["The build failed.", "See you tomorrow.", "Thanks for the quick review!"])
        return (f"Translate \"{text}\" into {lang}.", {"text": text, "target_language": code}, '{"translation": "..."}',
                f"In {lang}: the translation returned by the service.")
    if name == "list_directory":
        d = rng.choice(["src", "tests", "docs", "app/models"])
        if rng.random() < 0.5:
            return (f"List everything under {d}, including subfolders.", {"path": d, "recursive": True}, "a.py\nsub/b.py", f"{d} holds a.py and sub/b.py.")
        return (f"What files are in {d}?", {"path": d}, "a.py\nb.py", f"{d} holds a.py and b.py.")
    raise KeyError(name)


NO_TOOL = [("What does HTTP status 409 mean?", "409 Conflict: the request clashes with the current state of the resource, for example an edit based on an old version."),
           ("Explain what a Python decorator is in one sentence.", "A decorator is a function that takes a function and returns a wrapped replacement, applied with @name above a definition."),
           ("Thanks, that's all for now!", "You're welcome. Ask any time."),
           ("What is the difference between a list and a tuple?", "Lists are mutable, tuples are not; tuples can be dictionary keys."),
           ("Which is bigger, 2**10 or 10**3?", "2**10 = 1024 is bigger than 10**3 = 1000."),
           ("What does `git rebase` do, briefly?", "It replays your commits on top of another base commit, giving a linear history."),
           ("Say hello in French.", "Bonjour !"),
           ("What time zone is UTC+9?", "UTC+9 is Japan and Korea Standard Time."),
           ("Is 97 a prime number?", "Yes, 97 is prime."),
           ("What does SQL's LEFT JOIN keep?", "Every row of the left table, with NULLs where the right table has no match.")]
SYSTEMS = ["You are a helpful assistant with tools.", "You are a coding agent working in the repository at /repo.",
           "You are an office assistant. Use a tool only when the request needs one.", None]


def _function(name: str) -> dict:
    desc, props, required = TOOLS[name]
    return {"type": "function", "function": {"name": name, "description": desc,
                                             "parameters": {"type": "object", "properties": props, "required": required}}}


def trace(rng: random.Random, i: int) -> dict:
    names = sorted(TOOLS)
    offered = rng.sample(names, rng.randint(3, 5))
    system = rng.choice(SYSTEMS)
    messages = [{"role": "system", "content": system}] if system else []
    if rng.random() < 0.2:
        q, a = rng.choice(NO_TOOL)
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    else:
        calls = rng.sample(offered, 2 if rng.random() < 0.25 else 1)
        for n, name in enumerate(calls):
            request, args, result, answer = _task(rng, name)
            cid = f"call_{i}_{n}"
            messages += [{"role": "user", "content": request},
                         {"role": "assistant", "content": None, "tool_calls": [
                             {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]},
                         {"role": "tool", "tool_call_id": cid, "content": result},
                         {"role": "assistant", "content": answer}]
    return {"id": f"synth-{i:03d}", "tools": [_function(n) for n in offered], "messages": messages}


def render(count: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(json.dumps(trace(rng, i), ensure_ascii=False) + "\n" for i in range(count))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--check", action="store_true", help="compare with the shipped file instead of writing it")
    args = ap.parse_args()
    text = render(args.count, args.seed)
    if args.check:
        same = OUT.exists() and OUT.read_text() == text
        print(f"{OUT}: {'up to date' if same else 'differs from the generator'}")
        return 0 if same else 1
    OUT.write_text(text)
    print(f"wrote {args.count} traces to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
