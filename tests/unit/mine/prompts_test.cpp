#include <doctest/doctest.h>

#include "kalm/mine/filter_command.h"

DOCTEST_TEST_CASE("fill_template fills known placeholders and leaves the others") {
  using kalm::mine::fill_template;
  DOCTEST_CHECK(fill_template("in {language}: {task}", {{"language", "French"}}) == "in French: {task}");
  DOCTEST_CHECK(fill_template("{language}{language}", {{"language", "de"}}) == "dede");
  DOCTEST_CHECK(fill_template("{ language } {", {{"language", "x"}}) == "{ language } {");
  DOCTEST_CHECK(fill_template("", {{"language", "x"}}).empty());
  // A value containing a placeholder is not expanded again.
  DOCTEST_CHECK(fill_template("{a}", {{"a", "{a}"}}) == "{a}");
}
