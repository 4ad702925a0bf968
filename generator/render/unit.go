package render

import (
	"io"
	"strings"

	"github.com/coreos/go-systemd/v22/unit"
)

type unitOption struct{ section, name, value string }

func serialize(opts []*unitOption) ([]byte, error) {
	var uo []*unit.UnitOption
	for _, o := range opts {
		uo = append(uo, unit.NewUnitOption(o.section, o.name, o.value))
	}
	return io.ReadAll(unit.Serialize(uo))
}

// execQuote quotes one ExecStart argument the way systemd splits them:
// specifiers (%) and variables ($) are escaped, and an argument with
// whitespace, quotes or backslashes is double-quoted.
func execQuote(arg string) string {
	if strings.ContainsAny(arg, "%$") {
		arg = strings.NewReplacer("%", "%%", "$", "$$").Replace(arg)
	}
	if arg != "" && !strings.ContainsAny(arg, " \t\"'\\;") {
		return arg
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(arg) + `"`
}
