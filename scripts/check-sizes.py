#!/usr/bin/env python3
"""Source-size limits (issue 16): no non-test .rs file over 600 lines, no
function over 120 lines outside tests. Tests are files under a `tests/`
directory and `#[cfg(test)]` modules. A function is counted from its `fn`
line to the line that closes its body, by brace depth with string and char
literals and `//` comments removed. Exit 1 and list what is over."""
import pathlib
import re
import sys

MAX_FILE, MAX_FN = 600, 120
root = pathlib.Path(__file__).resolve().parent.parent
FN = re.compile(r'\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+"C"\s+)?fn\s+(\w+)')


def code(line):
    line = re.sub(r'"([^"\\]|\\.)*"', '""', line)
    line = re.sub(r"'(\\.|[^'\\])'", "''", line)
    return line.split('//')[0]


def block_end(lines, i):
    depth, started = 0, False
    for j in range(i, len(lines)):
        c = code(lines[j])
        depth += c.count('{') - c.count('}')
        started = started or '{' in c
        if started and depth <= 0:
            return j
    return len(lines) - 1


over = []
for path in sorted(root.rglob('*.rs')):
    rel = path.relative_to(root)
    if rel.parts[0] in ('target', 'out') or 'tests' in rel.parts[:-1]:
        continue
    lines = path.read_text().split('\n')
    if len(lines) > MAX_FILE:
        over.append(f'{rel}: {len(lines)} lines (> {MAX_FILE})')
    i = 0
    while i < len(lines):
        if re.match(r'\s*#\[cfg\(test\)\]', lines[i]):
            i = block_end(lines, i + 1) + 1
            continue
        m = FN.match(lines[i])
        if m and not lines[i].rstrip().endswith(';'):
            n = block_end(lines, i) - i + 1
            if n > MAX_FN:
                over.append(f'{rel}:{i + 1}: fn {m.group(7)} is {n} lines (> {MAX_FN})')
        i += 1
for o in over:
    print(o)
sys.exit(1 if over else 0)
