#!/bin/sh
# Run every test executable given on the command line, then print the total
# alone on the last line ("N passed, N failed, N skipped") for the CI, and
# exit non-zero when any test failed or an executable did not report.
set -u
passed=0; failed=0; skipped=0
for t in "$@"; do
        echo "== $t"
        out=$("$t" 2>&1)
        rc=$?
        printf '%s\n' "$out" | sed '$d'
        last=$(printf '%s\n' "$out" | tail -n 1)
        printf '%s\n' "$last"
        case "$last" in
        *" passed, "*" failed, "*" skipped")
                set -- $last
                passed=$((passed + $1)); failed=$((failed + $3)); skipped=$((skipped + $5))
                shift $#
                ;;
        *)
                echo "   $t did not report (exit $rc)"
                failed=$((failed + 1))
                ;;
        esac
        if [ $rc -ne 0 ] && [ "$failed" -eq 0 ]; then
                failed=1
        fi
done
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
