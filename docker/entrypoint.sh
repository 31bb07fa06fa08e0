#!/bin/sh
# ENTRYPOINT of the kubeyolo step images: `kubeyolo-entrypoint yolo-<step> [args...]`.
# Runs the step binary with the args; a first arg that repeats the binary's name (or its path) is
# dropped, so runners that put the command into CMD (kfp.local DockerRunner) work too.
step="$1"; shift
case "${1:-}" in
  "$step"|"/usr/local/bin/$step") shift ;;
esac
exec "/usr/local/bin/$step" "$@"
