// edgepin-test-pki: the test PKI (tests/helpers/test_pki.h) on the command
// line, so the Python tests make their certificates with the same code as
// the unit tests instead of a second generator of their own.
//
//   edgepin-test-pki new-ca DIR [--key-type ec|rsa] [--cn NAME]
//       writes DIR/ca.pem and DIR/ca.key (0600)
//   edgepin-test-pki issue DIR NAME [options]
//       writes DIR/NAME.pem, NAME.key (0600) and NAME-chain.pem, signed by
//       DIR/ca.pem + DIR/ca.key, or by --ca-cert F --ca-key F (for example
//       the cluster CA that deploy/make-pki.sh made)
//     --cn CN             subject CN (default NAME)
//     --dns NAME          subjectAltName DNS entry (repeatable; default none)
//     --ip ADDRESS        subjectAltName IP entry (repeatable)
//     --client-auth       add extendedKeyUsage clientAuth
//     --no-server-auth    leave out extendedKeyUsage serverAuth
//     --key-type ec|rsa   ECDSA P-256 (default) or RSA 2048
//     --days N            validity (default 30)
//     --serial N          serial number, decimal or 0x hex (default: 2)
// Exits 0 on success, 2 on a usage error, 1 on any OpenSSL or file error,
// with one line on stderr saying what failed.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "tests/helpers/test_pki.h"

namespace {

using edgepin::test::CertSpec;
using edgepin::test::KeyType;
using edgepin::test::TestPki;

int usage(const std::string& why) {
  std::fprintf(
      stderr,
      "edgepin-test-pki: %s\n"
      "usage: edgepin-test-pki new-ca DIR [--key-type ec|rsa] [--cn NAME]\n"
      "       edgepin-test-pki issue DIR NAME [--ca-cert F --ca-key F] [--cn CN]\n"
      "              [--dns NAME]... [--ip ADDRESS]... [--client-auth] [--no-server-auth]\n"
      "              [--key-type ec|rsa] [--days N] [--serial N]\n",
      why.c_str());
  return 2;
}

bool parse_key_type(std::string_view s, KeyType& out) {
  if (s == "ec") {
    out = KeyType::EcdsaP256;
    return true;
  }
  if (s == "rsa") {
    out = KeyType::Rsa2048;
    return true;
  }
  return false;
}

// Decimal or 0x-prefixed hex, all digits, non-zero; false otherwise.
bool parse_number(const std::string& s, unsigned long long& out) {
  const bool hex = s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
  if (s.empty() || s.size() > 20) return false;
  char* end = nullptr;
  out = std::strtoull(s.c_str(), &end, hex ? 16 : 10);
  return end && *end == '\0' && out != 0 && s[0] != '-';
}

int run(const std::vector<std::string>& args) {
  if (args.size() < 2) return usage("missing command or directory");
  const std::string& command = args[0];
  const std::filesystem::path dir = args[1];
  size_t i = 2;
  std::string name;
  if (command == "issue") {
    if (args.size() < 3) return usage("issue needs DIR and NAME");
    name = args[2];
    i = 3;
  } else if (command != "new-ca") {
    return usage("unknown command " + command);
  }

  CertSpec spec;
  spec.dns_names.clear();
  spec.common_name = name;
  KeyType key_type = KeyType::EcdsaP256;
  std::string ca_name = "Edgepin Test CA";
  std::filesystem::path ca_cert = dir / "ca.pem";
  std::filesystem::path ca_key = dir / "ca.key";
  for (; i < args.size(); ++i) {
    const std::string& opt = args[i];
    const bool has_value = i + 1 < args.size();
    if (opt == "--client-auth") {
      spec.client_auth = true;
    } else if (opt == "--no-server-auth") {
      spec.server_auth = false;
    } else if (!has_value) {
      return usage("option " + opt + " is unknown or needs a value");
    } else if (opt == "--key-type") {
      if (!parse_key_type(args[++i], key_type)) return usage("--key-type is ec or rsa");
    } else if (opt == "--cn") {
      spec.common_name = ca_name = args[++i];
    } else if (opt == "--dns") {
      spec.dns_names.push_back(args[++i]);
    } else if (opt == "--ip") {
      spec.ip_addresses.push_back(args[++i]);
    } else if (opt == "--days") {
      unsigned long long days = 0;
      if (!parse_number(args[++i], days) || days > 36500) return usage("--days needs 1..36500");
      spec.valid_days = static_cast<int>(days);
    } else if (opt == "--serial") {
      unsigned long long serial = 0;
      if (!parse_number(args[++i], serial)) return usage("--serial needs a positive number");
      spec.serial = serial;
    } else if (opt == "--ca-cert") {
      ca_cert = args[++i];
    } else if (opt == "--ca-key") {
      ca_key = args[++i];
    } else {
      return usage("unknown option " + opt);
    }
  }

  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    std::fprintf(stderr, "edgepin-test-pki: cannot create %s: %s\n", dir.c_str(),
                 ec.message().c_str());
    return 1;
  }
  if (command == "new-ca") {
    TestPki pki(dir, key_type, ca_name);
    return 0;
  }
  spec.key_type = key_type;
  TestPki pki = TestPki::open(dir, ca_cert, ca_key);
  pki.issue(name, spec);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "edgepin-test-pki: %s\n", e.what());
    return 1;
  }
}
