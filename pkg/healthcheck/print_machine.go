package healthcheck

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"strings"
)

// jsonReport is the `-o json` document, shaped like Linkerd's so existing
// tooling can read it.
type jsonReport struct {
	Success    bool           `json:"success"`
	Categories []jsonCategory `json:"categories"`
}

type jsonCategory struct {
	Name   string      `json:"categoryName"`
	Checks []jsonCheck `json:"checks"`
}

type jsonCheck struct {
	Description string `json:"description"`
	Hint        string `json:"hint,omitempty"`
	Error       string `json:"error,omitempty"`
	Result      Status `json:"result"`
}

// PrintJSON writes the report as one JSON document.
func PrintJSON(w io.Writer, rep Report) error {
	doc := jsonReport{Success: rep.Success, Categories: []jsonCategory{}}
	for _, c := range rep.Categories {
		jc := jsonCategory{Name: string(c.ID), Checks: []jsonCheck{}}
		for _, r := range c.Results {
			jc.Checks = append(jc.Checks, jsonCheck{Description: r.Description, Hint: r.Hint, Error: r.Error, Result: r.Status})
		}
		doc.Categories = append(doc.Categories, jc)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(doc)
}

type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Name     string       `xml:"name,attr"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Time     string       `xml:"time,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name     string      `xml:"name,attr"`
	Tests    int         `xml:"tests,attr"`
	Failures int         `xml:"failures,attr"`
	Time     string      `xml:"time,attr"`
	Cases    []junitCase `xml:"testcase"`
}

type junitCase struct {
	ClassName string        `xml:"classname,attr"`
	Name      string        `xml:"name,attr"`
	Time      string        `xml:"time,attr"`
	Failure   *junitFailure `xml:"failure,omitempty"`
	SystemOut string        `xml:"system-out,omitempty"`
}

type junitFailure struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr"`
	Text    string `xml:",chardata"`
}

// PrintJUnit writes the report as JUnit XML for CI systems: one test suite
// per category, one test case per check. Failures carry the error and the
// hint; warnings pass with the warning in system-out.
func PrintJUnit(w io.Writer, rep Report) error {
	doc := junitSuites{Name: "conduit check"}
	var total float64
	for _, c := range rep.Categories {
		s := junitSuite{Name: string(c.ID)}
		var secs float64
		for _, r := range c.Results {
			tc := junitCase{ClassName: "conduit-check." + string(c.ID), Name: r.Description, Time: seconds(r.Duration.Seconds())}
			detail := r.Error
			if r.Hint != "" {
				detail += "\nhint: " + r.Hint
			}
			switch r.Status {
			case StatusError:
				tc.Failure = &junitFailure{Message: firstLine(r.Error), Type: "error", Text: detail}
				s.Failures++
			case StatusWarning:
				tc.SystemOut = "warning: " + detail
			}
			secs += r.Duration.Seconds()
			s.Cases = append(s.Cases, tc)
			s.Tests++
		}
		s.Time = seconds(secs)
		total += secs
		doc.Tests += s.Tests
		doc.Failures += s.Failures
		doc.Suites = append(doc.Suites, s)
	}
	doc.Time = seconds(total)
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

func seconds(s float64) string {
	return strings.TrimSpace(fmt.Sprintf("%.3f", s))
}
