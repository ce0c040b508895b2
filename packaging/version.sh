#!/bin/sh
# Turns a git-describe version into a package version: it must start with a
# digit (an untagged tree becomes 0.0.0~git<hash>) and "-" sorts as "~".
v=${1#v}
case "$v" in
[0-9]*.[0-9]*) ;;
*) v="0.0.0~git$v" ;;
esac
echo "$v" | sed 's/-/~/g'
