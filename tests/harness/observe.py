#!/usr/bin/env python3
"""observe.py: helpers for test_observe.sh: hold idle connections, send raw requests, and check metrics scrapes,
JSON log lines and report pages.

  observe.py idle PORT N SECONDS        open N connections, send nothing, hold them SECONDS (prints how many opened)
  observe.py raw PORT BYTES             send BYTES (a Python bytes expression), print the status code answered
  observe.py counters DIR               check every counter only grows from scrape to scrape; print the last
                                        scrape's samples as JSON {"name{labels}": value}
  observe.py jsonlog FILE EVENT...      every line of FILE is one JSON object with time, level, job, event, msg;
                                        print {event: [objects]} for the events named
  observe.py html FILE                  parse FILE strictly (nesting, no script, nothing fetched), print JSON with
                                        its chart measures and summary cells
"""
import html.parser
import json
import os
import re
import socket
import sys
import time


def idle(port, count, seconds):
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.settimeout(5)
        try:
            s.connect(("127.0.0.1", port))
            socks.append(s)
        except OSError:
            s.close()
    print(len(socks), flush=True)
    time.sleep(seconds)
    for s in socks:
        s.close()


def raw(port, data):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(data)
    answer = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
    except socket.timeout:
        pass
    s.close()
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", answer)
    print(m.group(1).decode() if m else "none")


SAMPLE = re.compile(r'^([a-z_]+)(\{[^}]*\})? (\S+)$')


def parse_metrics(text):
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            raise SystemExit(f"not a sample line: {line!r}")
        samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return samples


def counters(directory):
    files = sorted(f for f in os.listdir(directory) if f.endswith(".txt"))
    if not files:
        raise SystemExit("no scrape")
    last = {}
    for name in files:
        with open(os.path.join(directory, name)) as f:
            samples = parse_metrics(f.read())
        for key, value in samples.items():
            counter = key.split("{")[0].endswith(("_total", "_count", "_sum", "_bucket"))
            if counter and key in last and value < last[key]:
                raise SystemExit(f"{key} went down from {last[key]} to {value} in {name}")
        last = samples
    print(json.dumps({"scrapes": len(files), "last": last}))


def jsonlog(path, events):
    found = {e: [] for e in events}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            try:
                o = json.loads(line)
            except ValueError as e:
                raise SystemExit(f"{path}:{n}: not JSON ({e}): {line!r}")
            if not isinstance(o, dict):
                raise SystemExit(f"{path}:{n}: not an object: {line!r}")
            for key in ("time", "level", "job", "event", "msg"):
                if key not in o:
                    raise SystemExit(f"{path}:{n}: no {key}: {line!r}")
            if not re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", o["time"]):
                raise SystemExit(f"{path}:{n}: time {o['time']!r}")
            if o["event"] in found:
                found[o["event"]].append(o)
    print(json.dumps(found))


VOID = {"meta", "br", "hr", "img", "input", "link"}


class Strict(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.measures, self.cells, self.cell = [], [], {}, None
        self.errors = []

    def check_attrs(self, tag, attrs):
        for k, v in attrs:
            if k in ("src", "href") or (v and re.search(r"(https?:)?//(?!www\.w3\.org/2000/svg)", v)):
                self.errors.append(f"<{tag} {k}={v!r}> refers to something outside the page")
            if k.startswith("on"):
                self.errors.append(f"<{tag}> has an event handler {k}")

    def handle_starttag(self, tag, attrs):
        self.check_attrs(tag, attrs)
        if tag in ("script", "iframe", "object", "embed", "link", "img", "image", "use"):
            self.errors.append(f"<{tag}> in the page")
        a = dict(attrs)
        if tag == "figure" and "data-measure" in a:
            self.measures.append(a["data-measure"])
        if tag == "td" and a.get("id", "").startswith("sum-"):
            self.cell = a["id"]
            self.cells[self.cell] = ""
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.check_attrs(tag, attrs)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()
        if tag == "td":
            self.cell = None

    def handle_data(self, data):
        if self.cell:
            self.cells[self.cell] += data


def check_html(path):
    p = Strict()
    with open(path, encoding="utf-8") as f:
        p.feed(f.read())
    p.close()
    if p.stack:
        p.errors.append(f"unclosed: {p.stack}")
    if p.errors:
        raise SystemExit("; ".join(p.errors[:5]))
    print(json.dumps({"measures": p.measures, "cells": p.cells}))


def main():
    cmd = sys.argv[1]
    if cmd == "idle":
        idle(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    elif cmd == "raw":
        raw(int(sys.argv[2]), eval(sys.argv[3], {"__builtins__": {}}))  # a bytes expression from the test
    elif cmd == "counters":
        counters(sys.argv[2])
    elif cmd == "jsonlog":
        jsonlog(sys.argv[2], sys.argv[3:])
    elif cmd == "html":
        check_html(sys.argv[2])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
