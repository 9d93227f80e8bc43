echo "hello from ork"
echo '{"greeting": "hi"}' > "$ORK_OUTPUT"
