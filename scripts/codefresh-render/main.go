// Renders a Codefresh step-type's stepsTemplate as Codefresh does: Go's text/template with the sprig
// functions and the step-type's delimiters, `.Arguments` holding the step's arguments. Used by
// tests/frontends.rs to render step.yaml with hostile values.
//
// Usage: render TEMPLATE_FILE LEFT RIGHT < ARGUMENTS_JSON
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"text/template"

	"github.com/Masterminds/sprig"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: render TEMPLATE_FILE LEFT RIGHT < ARGUMENTS_JSON")
		os.Exit(2)
	}
	text, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var arguments map[string]interface{}
	if err := json.NewDecoder(os.Stdin).Decode(&arguments); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	t, err := template.New("steps").Delims(os.Args[2], os.Args[3]).Funcs(sprig.TxtFuncMap()).Parse(string(text))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := t.Execute(os.Stdout, map[string]interface{}{"Arguments": arguments}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
