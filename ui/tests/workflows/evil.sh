payload='<script>window.__ork_pwned = 1</script><img src=x onerror="window.__ork_pwned = 2">'
echo "log: $payload"
printf '{"html": "%s"}' "$(printf '%s' "$payload" | sed 's/"/\\"/g')" > "$ORK_OUTPUT"
