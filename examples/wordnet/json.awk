# Shared helpers for the converters (POSIX awk: runs under mawk and gawk).
# Loaded with -f before the converter's own file.

# A JSON string literal for s. Texts are already whitespace-normalised, but a
# character-by-character pass still escapes every control character, so no
# input can produce invalid JSON. gsub() is avoided on purpose: the number of
# backslashes a replacement needs differs between awk implementations.
function js(s,    out, i, n, c) {
  if (s !~ /["\\]/ && s !~ CTRL_RE) return "\"" s "\""
  out = ""
  n = length(s)
  for (i = 1; i <= n; i++) {
    c = substr(s, i, 1)
    if (c == "\"") out = out "\\\""
    else if (c == "\\") out = out "\\\\"
    else if (c ~ CTRL_RE) out = out sprintf("\\u%04x", ORD[c])
    else out = out c
  }
  return "\"" out "\""
}

# A JSON array of strings from arr[1..n].
function jarr(arr, n,    out, i) {
  out = "["
  for (i = 1; i <= n; i++) out = out (i > 1 ? ", " : "") js(arr[i])
  return out "]"
}

# Collapses runs of blanks (and stray control characters) to one space; trims.
function norm(s) {
  gsub(CTRL_RE, " ", s)
  gsub(/[ ]+/, " ", s)
  sub(/^ /, "", s)
  sub(/ $/, "", s)
  return s
}

function json_init(    i) {
  for (i = 1; i < 256; i++) ORD[sprintf("%c", i)] = i
  CTRL_RE = "[" sprintf("%c", 1) "-" sprintf("%c", 31) sprintf("%c", 127) "]"
}
