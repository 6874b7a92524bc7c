// Keeps vmhost/API.md and vmhost/LIFECYCLE.md true to the code: every op the decoder takes
// has a section in API.md listing exactly the fields its decoder reads, and LIFECYCLE.md
// holds the transition table as the code has it.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "ferry/vmhost/lifecycle.h"
#include "ferry/vmhost/requests.h"

namespace ferry::vmhost {
namespace {

std::string Read(const std::string& name) {
  std::ifstream in(std::string(FERRY_VMHOST_DIR) + "/" + name);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// "### op" headings, each with the "- `field`" lines under it.
std::map<std::string, std::set<std::string>> DocumentedOps(const std::string& doc) {
  std::map<std::string, std::set<std::string>> ops;
  std::istringstream in(doc);
  std::string line, current;
  while (std::getline(in, line)) {
    if (line.rfind("### ", 0) == 0) {
      current = line.substr(4);
      ops[current];
    } else if (line.rfind("## ", 0) == 0) {
      current.clear();
    } else if (!current.empty() && line.rfind("- `", 0) == 0) {
      ops[current].insert(line.substr(3, line.find('`', 3) - 3));
    }
  }
  return ops;
}

TEST(ApiDoc, EveryOpAndFieldIsDocumentedAndNothingElse) {
  auto documented = DocumentedOps(Read("API.md"));
  ASSERT_FALSE(documented.empty()) << "vmhost/API.md not found or without ### sections";
  std::set<std::string> ops(ApiOps().begin(), ApiOps().end());
  for (const auto& op : ops) {
    ASSERT_TRUE(documented.count(op)) << "API.md has no section for op " << op;
    auto read = ApiFields(op);
    std::set<std::string> fields(read.begin(), read.end());
    EXPECT_EQ(documented[op], fields) << "fields of " << op << " differ between API.md and the decoder";
  }
  for (const auto& [op, fields] : documented) EXPECT_TRUE(ops.count(op)) << "API.md documents an op the API lacks: " << op;
}

TEST(ApiDoc, LifecycleDocHoldsTheTable) {
  std::string doc = Read("LIFECYCLE.md");
  EXPECT_NE(doc.find(TransitionTableMarkdown()), std::string::npos)
      << "vmhost/LIFECYCLE.md must hold this table verbatim:\n" << TransitionTableMarkdown();
}

}  // namespace
}  // namespace ferry::vmhost
