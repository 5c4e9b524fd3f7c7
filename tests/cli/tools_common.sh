# Every tool honours the shared CLI contract: --help, --version, exit codes,
# --config / --dump-config, error messages prefixed with the tool name.
. "$(dirname "$0")/lib.sh"

for tool in kalm-synth-filter kalm-mine-negatives kalm-train kalm-distill kalm-embed kalm-eval; do
  exe="$KALM_BIN/$tool"
  expect_rc 0 "$exe" --help && {
    for flag in --threads --seed --quiet --config --dump-config --version; do
      expect_grep "$flag" "$tmp/out" "$tool --help"
    done
    expect_grep "seed UINT=42" "$tmp/out" "$tool --help shows defaults"
  }
  expect_rc 0 "$exe" --version && {
    expect_grep "^$tool \(kalm\) [0-9]+\.[0-9]+\.[0-9]+ \(git [0-9a-f]+|unknown\)" "$tmp/out" "$tool --version"
    expect_grep "LibTorch [0-9]+\.[0-9]+" "$tmp/out" "$tool --version"
  }
  expect_rc 2 "$exe" --no-such-flag && expect_grep "^$tool: error: " "$tmp/err"
  expect_rc 2 "$exe" --threads 0 && expect_grep "^$tool: error: .*threads" "$tmp/err"
  expect_rc 2 "$exe" --seed notanumber && expect_grep "^$tool: error: " "$tmp/err"
  # --dump-config prints what --config reads back.
  expect_rc 0 "$exe" --dump-config --seed 7 --threads 3 && {
    expect_grep "^seed=7$" "$tmp/out" "$tool --dump-config"
    cp "$tmp/out" "$tmp/cfg.toml"
    expect_rc 0 "$exe" --config "$tmp/cfg.toml" --dump-config && expect_grep "^threads=3$" "$tmp/out" "config round trip"
  }
  expect_rc 2 "$exe" --config "$tmp/does-not-exist.toml" && expect_grep "^$tool: error: " "$tmp/err"
done
finish
