#!/usr/bin/env bash
# Prints a bench's result as a dated markdown table that docs/benchmarks.md takes as is
# (sourced by the bench scripts, not run):
#   md_begin "title" "command"   heading with today's date and the commit, then the command
#   md_cols  "col" "col" ...     the header row and its separator
#   md_row   "val" "val" ...     one row
#   md_end                       prints what was collected (to stdout, after the bench's own lines)
MD_OUT=""
md_begin() {
    local commit
    commit=$(git -C "$(dirname "${BASH_SOURCE[0]}")/.." rev-parse --short HEAD 2>/dev/null || echo unknown)
    MD_OUT+=$'\n'"## $1, $(date -u +%Y-%m-%d) (\`$commit\`)"$'\n\n'"\`$2\`"$'\n\n'
}
md_cols() {
    md_row "$@"
    local sep="" c
    for c in "$@"; do sep+="|---"; done
    MD_OUT+="$sep|"$'\n'
}
md_row() {
    local out="|" v
    for v in "$@"; do out+=" $v |"; done
    MD_OUT+="$out"$'\n'
}
md_end() {
    echo
    echo "== markdown for docs/benchmarks.md:"
    printf '%s' "$MD_OUT"
}
# md_num 1000000 -> 1,000,000 (the doc's thousands separator, whatever the locale)
md_num() { echo "$1" | sed -E ':a;s/^([0-9]+)([0-9]{3})/\1,\2/;ta'; }
