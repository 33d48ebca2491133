"""The C header's names: every one it declares is the library's own,
prefixed (`UPCASE_` for macros, `upcase_` for types and functions), so that
including it cannot clash with a C program's names."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def declared(text):
    """(macros, other names) declared in a C header's text."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    macros = re.findall(r"^\s*#\s*define\s+(\w+)", text, flags=re.M)
    names = re.findall(r"\b(?:struct|enum|union)\s+(\w+)\s*\{", text)  # definitions, not uses
    names += re.findall(r"^typedef\b[^;{]*?\(\s*\*\s*(\w+)\s*\)", text, flags=re.M)  # function pointer types
    names += re.findall(r"^typedef\b[^;({]*?\b(\w+)\s*(?:\[[^\]]*\]\s*)*;", text, flags=re.M)  # incl. arrays
    names += re.findall(r"^extern\b[^;(]*?\b(\w+)\s*(?:\[[^\]]*\]\s*)*;", text, flags=re.M)  # statics
    names += re.findall(r"^\}\s*(\w+)\s*;", text, flags=re.M)  # typedef struct {...} name;
    names += re.findall(r"^(?!typedef|#)[\w \t\*]*?\b(\w+)\(", text, flags=re.M)  # functions
    return macros, names


def test_the_parser_sees_what_it_must():
    macros, names = declared("#define UPCASE_H\n#define MAX 1\n/* #define HIDDEN 2 */\n"
                             "typedef struct upcase_s upcase_s;\ntypedef void (*cb)(int);\nint h(struct sockaddr *sa);\n"
                             "typedef uint8_t arr[16];\nextern const uint32_t VAR;\nextern const char TAB[4];\n"
                             "typedef struct w {\n  void (*field)(int);\n} w;\n"
                             "typedef struct t {\n  int x;\n} t_t;\nint f(int a,\n      int b);\n"
                             "const char *upcase_g(void);\n")
    assert macros == ["UPCASE_H", "MAX"]
    assert set(names) == {"upcase_s", "t", "cb", "h", "arr", "VAR", "TAB", "w", "t_t", "f", "upcase_g"}


def test_every_name_in_the_header_is_prefixed():
    macros, names = declared((ROOT / "include" / "upcase.h").read_text())
    assert len(macros) > 20 and len(names) > 30  # the header, not an empty parse
    assert [m for m in macros if not m.startswith("UPCASE_")] == []
    assert sorted({n for n in names if not n.startswith("upcase_")}) == []
