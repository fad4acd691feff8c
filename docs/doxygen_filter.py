#!/usr/bin/env python3
# Doxygen input filter for mproc's public headers (docs/Doxyfile.in). mproc
# documents its API with plain `//` comments placed right above each
# declaration; this filter hands them to Doxygen as `///` comments, without
# changing the headers and keeping every line where it is (so Doxygen's
# warnings point at the right line):
#   - the comment block that opens the file becomes the file's description
#     (its two boilerplate lines, project and licence, are dropped);
#   - a comment block directly above a declaration (no blank line between)
#     at namespace or class scope becomes that declaration's documentation;
#   - comments inside function bodies, concept and requires bodies, and
#     blocks followed by a blank line (section notes) stay plain comments.
# SPDX-License-Identifier: MIT
import re
import sys

TYPE_SCOPE = re.compile(r"^(?:export\s+)?(?:inline\s+)?(namespace|class|struct|union|enum)\b")


def strip_code(line):
    """The line without string/char literals and // comments (braces only matter outside them)."""
    out, i, n = [], 0, len(line)
    while i < n:
        c = line[i]
        if c in "\"'":
            j = i + 1
            while j < n and line[j] != c:
                j += 2 if line[j] == "\\" else 1
            out.append(c + c)
            i = j + 1
        elif line.startswith("//", i):
            break
        else:
            out.append(c)
            i += 1
    return "".join(out)


def strip_template_header(text):
    text = text.strip()
    while text.startswith("template"):
        at = text.find("<")
        if at < 0:
            return text
        depth = 0
        for k in range(at, len(text)):
            if text[k] == "<":
                depth += 1
            elif text[k] == ">":
                depth -= 1
                if depth == 0:
                    text = text[k + 1:].strip()
                    break
        else:
            return text
    return text


def as_doc(line):
    """`line`, a `//` comment, as a `///` one. Outside `code spans`, text that
    Doxygen would read as a link request is escaped: `#word` (as in
    "#include") and `/ns::name` (as in "std::vector<T>/std::string")."""
    indent, text = re.match(r"^(\s*)//(.*)$", line).groups()
    parts = text.split("`")
    for n in range(0, len(parts), 2):
        parts[n] = re.sub(r"#(?=[A-Za-z_])", r"\\#", parts[n])
        parts[n] = re.sub(r"/(?=[A-Za-z_]\w*::)", "/%", parts[n])
    return indent + "///" + "`".join(parts)


def main(path):
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    out = list(lines)

    # The file's opening comment block: its description.
    k = 0
    while k < len(lines) and lines[k].startswith("//"):
        k += 1
    if k > 0:
        for i in range(k):
            out[i] = "///"
        out[0] = "/// @file"
        body = [i for i in range(k) if not re.match(r"^// (mproc — |SPDX-License-Identifier)", lines[i])]
        for i in body:
            out[i] = as_doc(lines[i])

    # Scope tracking: a stack with True for namespace/class scopes.
    stack = []
    pending = ""  # code since the last ; { or }
    block = []  # indices of the comment block being read
    for i in range(k, len(lines)):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("//"):
            if all(stack) and not stripped.startswith("///"):
                block.append(i)
            continue
        if stripped.startswith("#"):
            continue  # preprocessor lines neither end a comment block nor open a scope
        if block:
            if stripped:
                for j in block:
                    out[j] = as_doc(lines[j])
            block = []
        for c in strip_code(line):
            if c == "{":
                stack.append(bool(TYPE_SCOPE.match(strip_template_header(pending))) and all(stack))
                pending = ""
            elif c == "}":
                if stack:
                    stack.pop()
                pending = ""
            elif c == ";":
                pending = ""
            else:
                pending += c
        pending += " "
    sys.stdout.write("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
