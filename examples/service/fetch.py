#!/usr/bin/python3
"""Fetches a URL and fails unless the body contains the expected text."""
import sys
import urllib.request

url, expected = sys.argv[1], sys.argv[2]
with urllib.request.urlopen(url, timeout=10) as r:
    body = r.read().decode()
print(body)
if expected not in body:
    sys.exit("expected %r in the response" % expected)
