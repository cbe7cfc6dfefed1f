// Package deploy_test checks the deployment files: the compose file, the
// Kubernetes manifests, the Prometheus scrape config and the Grafana
// provisioning and dashboards, whose ClickHouse queries run against a
// real ClickHouse.
package deploy_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// yamlDocs reads every document of a YAML file.
func yamlDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []map[string]any
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
}

// dig walks nested maps and lists: dig(v, "spec", "template", 0).
func dig(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func strs(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, fmt.Sprint(x))
	}
	return out
}

// flagValue returns the value of --name in args ("--name", "value").
func flagValue(args []string, name string) string {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}

func TestEveryYAMLFileParses(t *testing.T) {
	t.Parallel()
	n := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "testbed" {
			return filepath.SkipDir
		}
		if ext := filepath.Ext(path); ext == ".yaml" || ext == ".yml" {
			if len(yamlDocs(t, path)) == 0 {
				t.Errorf("%s: no YAML document", path)
			}
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Errorf("found %d YAML files; want the compose file, the manifests and the provisioning", n)
	}
}

func TestKubernetesManifests(t *testing.T) {
	t.Parallel()
	kust := yamlDocs(t, "k8s/kustomization.yaml")[0]
	kinds := map[string]int{}
	roles := map[string]bool{}
	for _, res := range strs(kust["resources"]) {
		for _, doc := range yamlDocs(t, filepath.Join("k8s", res)) {
			kind, _ := doc["kind"].(string)
			if doc["apiVersion"] == nil || kind == "" || dig(doc, "metadata", "name") == nil {
				t.Errorf("%s: a document lacks apiVersion, kind or metadata.name", res)
				continue
			}
			kinds[kind]++
			if kind == "Deployment" || kind == "StatefulSet" {
				for _, r := range checkDeployment(t, res, doc) {
					roles[r] = true
				}
			}
			if kind == "StatefulSet" {
				svc := dig(doc, "spec", "serviceName")
				if svc == nil || !slices.ContainsFunc(yamlDocs(t, filepath.Join("k8s", res)), func(d map[string]any) bool {
					return d["kind"] == "Service" && dig(d, "metadata", "name") == svc && dig(d, "spec", "clusterIP") == "None"
				}) {
					t.Errorf("%s: StatefulSet's serviceName %v is not a headless Service in the file", res, svc)
				}
			}
			if kind == "ConfigMap" {
				checkClickHouseDSN(t, res, fmt.Sprint(dig(doc, "data", "SLUICE_CLICKHOUSE_DSN")))
			}
		}
	}
	for _, kind := range []string{"Namespace", "ConfigMap", "Secret", "Job", "Deployment", "StatefulSet", "Service"} {
		if kinds[kind] == 0 {
			t.Errorf("no %s in the manifests", kind)
		}
	}
	for _, r := range []string{"api", "delivery", "projections", "tiers", "router", "analytics"} {
		if !roles[r] {
			t.Errorf("no Deployment or StatefulSet runs the %s role", r)
		}
	}
}

// consumingRoles are the roles that join consumer groups as static
// members and name transactional ids after the node id.
var consumingRoles = []string{"delivery", "projections", "tiers", "router", "analytics"}

// checkClickHouseDSN wants a DSN without a database: on a fresh server
// the database does not exist yet, and the analytics role creates the
// one --clickhouse-database names.
func checkClickHouseDSN(t *testing.T, where, dsn string) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme != "clickhouse" || u.Host == "" {
		t.Errorf("%s: SLUICE_CLICKHOUSE_DSN %q is not a clickhouse:// URL", where, dsn)
		return
	}
	if strings.Trim(u.Path, "/") != "" {
		t.Errorf("%s: SLUICE_CLICKHOUSE_DSN %q names database %q, which does not exist on a fresh ClickHouse; leave it to --clickhouse-database", where, dsn, u.Path)
	}
}

func TestDockerfileUserIsNumeric(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	user := ""
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "USER "); ok {
			user = strings.TrimSpace(v)
		}
	}
	// The kubelet checks runAsNonRoot against the image's user only when
	// it is numeric.
	if !regexp.MustCompile(`^[1-9][0-9]*(:[0-9]+)?$`).MatchString(user) {
		t.Errorf("Dockerfile USER %q; want a numeric non-root uid (65532:65532)", user)
	}
}

// checkDeployment checks a Sluice Deployment's probes against the port
// that serves them, and returns the roles it runs.
func checkDeployment(t *testing.T, file string, doc map[string]any) []string {
	t.Helper()
	c := dig(doc, "spec", "template", "spec", "containers", 0)
	args := strs(dig(c, "args"))
	if args[0] != "serve" {
		t.Errorf("%s: args %v do not start with serve", file, args)
	}
	roles := strings.Split(flagValue(args, "--roles"), ",")
	// A node id that survives pod replacement: a StatefulSet's pod name.
	if slices.ContainsFunc(roles, func(r string) bool { return slices.Contains(consumingRoles, r) }) && doc["kind"] != "StatefulSet" {
		t.Errorf("%s: roles %v run as a %v; want a StatefulSet, whose pod names (the node ids) survive replacement", file, roles, doc["kind"])
	}
	if sc := dig(doc, "spec", "template", "spec", "securityContext"); dig(sc, "runAsNonRoot") == true {
		if uid, ok := dig(sc, "runAsUser").(int); !ok || uid == 0 {
			t.Errorf("%s: runAsNonRoot without a numeric non-root runAsUser (%v)", file, dig(sc, "runAsUser"))
		}
	}
	addr := flagValue(args, "--http-addr")
	if !slices.Contains(roles, "api") {
		addr = flagValue(args, "--metrics-addr")
	}
	if addr == "" {
		t.Errorf("%s: roles %v serve no /healthz: want --http-addr (api) or --metrics-addr", file, roles)
		return roles
	}
	_, port, _ := strings.Cut(addr, ":")
	if got := fmt.Sprint(dig(c, "ports", 0, "containerPort")); got != port {
		t.Errorf("%s: containerPort %s; the probes' server listens on %s", file, got, port)
	}
	for probe, path := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"} {
		if got := dig(c, probe, "httpGet", "path"); got != path {
			t.Errorf("%s: %s path %v; want %s", file, probe, got, path)
		}
		if got := fmt.Sprint(dig(c, probe, "httpGet", "port")); got != port {
			t.Errorf("%s: %s port %s; want %s", file, probe, got, port)
		}
	}
	return roles
}

func TestComposeFile(t *testing.T) {
	t.Parallel()
	compose := yamlDocs(t, "compose.yaml")[0]
	services, _ := compose["services"].(map[string]any)
	images := map[string]string{
		"kafka": "apache/kafka:", "redis": "redis:", "clickhouse": "clickhouse/clickhouse-server:",
		"prometheus": "prom/prometheus:", "grafana": "grafana/grafana:",
	}
	for name, image := range images {
		if got, _ := dig(services, name, "image").(string); !strings.HasPrefix(got, image) {
			t.Errorf("service %s: image %q; want %s…", name, got, image)
		}
	}
	if got := dig(services, "kafka", "environment", "KAFKA_PROCESS_ROLES"); got != "broker,controller" {
		t.Errorf("kafka: KAFKA_PROCESS_ROLES %v; want KRaft broker,controller", got)
	}
	checkClickHouseDSN(t, "compose.yaml", fmt.Sprint(dig(compose, "x-sluice", "environment", "SLUICE_CLICKHOUSE_DSN")))
	if got := dig(services, "grafana", "environment", "GF_INSTALL_PLUGINS"); got != "grafana-clickhouse-datasource" {
		t.Errorf("grafana: GF_INSTALL_PLUGINS %v; want the ClickHouse plugin", got)
	}
	// Every mounted file or directory exists.
	for name := range services {
		vols, _ := dig(services, name, "volumes").([]any)
		for _, v := range vols {
			src, _, _ := strings.Cut(fmt.Sprint(v), ":")
			if strings.HasPrefix(src, ".") {
				if _, err := os.Stat(src); err != nil {
					t.Errorf("service %s mounts %s: %v", name, src, err)
				}
			}
		}
	}
	// Prometheus scrapes each Sluice service where it serves /metrics.
	metricsPorts := map[string]string{}
	for name := range services {
		cmd, _ := dig(services, name, "command").([]any)
		if !strings.HasPrefix(name, "sluice-") || len(cmd) == 0 || cmd[0] != "serve" {
			continue
		}
		args := strs(cmd)
		addr := flagValue(args, "--metrics-addr")
		if addr == "" {
			addr = flagValue(args, "--http-addr")
		}
		_, metricsPorts[name], _ = strings.Cut(addr, ":")
	}
	prom := yamlDocs(t, "prometheus/prometheus.yml")[0]
	var targets []string
	for _, sc := range dig(prom, "scrape_configs", 0, "static_configs").([]any) {
		targets = append(targets, strs(dig(sc, "targets"))...)
	}
	for name, port := range metricsPorts {
		if !slices.Contains(targets, name+":"+port) {
			t.Errorf("prometheus does not scrape %s:%s (targets %v)", name, port, targets)
		}
	}
	if len(metricsPorts) < 3 {
		t.Errorf("sluice serve services: %v; want api, workers and analytics", metricsPorts)
	}
	if _, err := os.Stat("Dockerfile"); err != nil {
		t.Errorf("the compose file builds deploy/Dockerfile: %v", err)
	}
}

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	UID    string  `json:"uid"`
	Title  string  `json:"title"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos *struct{ X, Y, W, H int } `json:"gridPos"`
	Targets []struct {
		RefID  string `json:"refId"`
		Expr   string `json:"expr"`
		RawSQL string `json:"rawSql"`
	} `json:"targets"`
}

// dashboards reads every dashboard file.
func dashboards(t *testing.T) map[string]dashboard {
	t.Helper()
	files, err := filepath.Glob("grafana/dashboards/*.json")
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]dashboard)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: invalid JSON: %v", f, err)
		}
		out[f] = d
	}
	return out
}

var metricName = regexp.MustCompile(`\bsluice_[a-z_]+`)

func TestDashboards(t *testing.T) {
	t.Parallel()
	// The data sources the provisioning declares.
	sources := map[string]string{} // uid -> type
	for _, ds := range yamlDocs(t, "grafana/provisioning/datasources/sluice.yaml")[0]["datasources"].([]any) {
		sources[fmt.Sprint(dig(ds, "uid"))] = fmt.Sprint(dig(ds, "type"))
	}
	if sources["clickhouse"] != "grafana-clickhouse-datasource" || sources["prometheus"] != "prometheus" {
		t.Fatalf("provisioned data sources %v; want prometheus and the grafana-clickhouse-datasource plugin", sources)
	}
	provider := yamlDocs(t, "grafana/provisioning/dashboards/sluice.yaml")[0]
	if dig(provider, "providers", 0, "options", "path") == nil {
		t.Error("the dashboard provider names no path")
	}
	source := goSource(t)
	ds := dashboards(t)
	want := []string{"sluice-overview", "sluice-delivery", "sluice-dlq", "sluice-lag"}
	var uids []string
	for f, d := range ds {
		uids = append(uids, d.UID)
		if d.Title == "" || len(d.Panels) == 0 {
			t.Errorf("%s: no title or no panels", f)
		}
		ids := map[int]bool{}
		for _, p := range d.Panels {
			where := fmt.Sprintf("%s panel %q", f, p.Title)
			if ids[p.ID] || p.ID == 0 {
				t.Errorf("%s: id %d missing or repeated", where, p.ID)
			}
			ids[p.ID] = true
			if p.Type == "" || p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("%s: bad type or gridPos", where)
			}
			if sources[p.Datasource.UID] != p.Datasource.Type {
				t.Errorf("%s: data source %s/%s is not provisioned", where, p.Datasource.Type, p.Datasource.UID)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: no queries", where)
			}
			for _, q := range p.Targets {
				switch p.Datasource.UID {
				case "prometheus":
					if q.Expr == "" {
						t.Errorf("%s: Prometheus query without expr", where)
					}
					for _, name := range metricName.FindAllString(q.Expr, -1) {
						if !metricExists(source, name) {
							t.Errorf("%s: %s is not a metric Sluice exports", where, name)
						}
					}
				case "clickhouse":
					if q.RawSQL == "" {
						t.Errorf("%s: ClickHouse query without rawSql", where)
					}
				}
			}
		}
	}
	slices.Sort(uids)
	slices.Sort(want)
	if !slices.Equal(uids, want) {
		t.Errorf("dashboards %v; want %v", uids, want)
	}
}

// goSource is the text of the binary's metric definitions.
func goSource(t *testing.T) string {
	t.Helper()
	files, err := filepath.Glob("../cmd/sluice/*.go")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(src)
	}
	return b.String()
}

// metricExists reports whether name (a histogram's series too) is defined
// in source; franz-go's kprom series all start with sluice_kafka_.
func metricExists(source, name string) bool {
	if strings.HasPrefix(name, "sluice_kafka_") {
		return true
	}
	for _, suffix := range []string{"_bucket", "_count", "_sum"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && strings.Contains(source, `"`+base+`"`) {
			return true
		}
	}
	return strings.Contains(source, `"`+name+`"`)
}

// envClickHouseHTTP names the test bed's ClickHouse HTTP interface.
const envClickHouseHTTP = "SLUICE_TEST_CLICKHOUSE_HTTP"

// TestDashboardQueriesRunOnClickHouse runs every ClickHouse panel query,
// its macros expanded as the Grafana plugin does, against tables made by
// the analytics role's migrations in a scratch database holding a few
// rows, and requires each to return rows.
func TestDashboardQueriesRunOnClickHouse(t *testing.T) {
	t.Parallel()
	base := os.Getenv(envClickHouseHTTP)
	if base == "" {
		t.Skipf("REAL CLICKHOUSE NOT TESTED: %s is unset (the README's test command starts ClickHouse and sets it)", envClickHouseHTTP)
	}
	db := fmt.Sprintf("sluice_dash_%d", time.Now().UnixNano())
	ch := clickhouse{base: base}
	ch.exec(t, "CREATE DATABASE "+db)
	t.Cleanup(func() { ch.exec(t, "DROP DATABASE IF EXISTS "+db) })
	migrations, err := filepath.Glob("../analytics/migrations/*.sql")
	if err != nil || len(migrations) == 0 {
		t.Fatalf("no analytics migrations in ../analytics/migrations: %v", err)
	}
	slices.Sort(migrations)
	for _, m := range migrations {
		b, err := os.ReadFile(m)
		if err != nil {
			t.Fatal(err)
		}
		for _, stmt := range strings.Split(strings.ReplaceAll(string(b), "{db}", db), ";") {
			if strings.TrimSpace(stmt) != "" {
				ch.exec(t, stmt)
			}
		}
	}
	now := time.Now().Unix()
	ch.exec(t, fmt.Sprintf(`INSERT INTO %s.sluice_events (topic, partition, offset, tenant_id, event_id, type, job_id, queue, attempt, status_code, latency_us, error, outcome, actor_kind, actor_id, causation_id, occurred_at, occurred_at_us, inserted_at) VALUES
		('sluice.events', 0, 1, 't1', 'e1', 'job.enqueued', 'j1', 'emails', 0, 0, 0, '', '', 'api_key', 'k1', '', %[2]d, %[2]d000000, %[2]d),
		('sluice.events', 0, 2, 't1', 'e2', 'job.attempted', 'j1', 'emails', 1, 500, 12000, 'HTTP 500', 'DEAD', 'system', 'delivery', 'e1', %[2]d, %[2]d000000, %[2]d),
		('sluice.events', 0, 3, 't1', 'e3', 'job.retried', 'j1', 'emails', 0, 0, 0, '', '', 'api_key', 'k1', '', %[2]d, %[2]d000000, %[2]d)`, db, now))
	ch.exec(t, fmt.Sprintf(`INSERT INTO %s.sluice_attempts (tenant_id, job_id, queue, endpoint_id, target_url, attempt, status_code, latency_us, error, response_excerpt, outcome, actor_id, started_at, started_at_us, topic, partition, offset) VALUES
		('t1', 'j1', 'emails', '', 'https://hooks.example.com/x', 1, 500, 12000, 'HTTP 500', 'oops', 'DEAD', 'delivery', %[2]d, %[2]d000000, 'sluice.events', 0, 2),
		('t1', 'j2', 'emails', 'ep_1', 'https://a.example.com/y', 1, 204, 3000, '', '', 'SUCCEEDED', 'delivery', %[2]d, %[2]d000000, 'sluice.events', 1, 7)`, db, now))

	for f, d := range dashboards(t) {
		for _, p := range d.Panels {
			for _, q := range p.Targets {
				if q.RawSQL == "" {
					continue
				}
				t.Run(fmt.Sprintf("%s/%s", filepath.Base(f), p.Title), func(t *testing.T) {
					sql := expandMacros(q.RawSQL, time.Unix(now-3600, 0), time.Unix(now+3600, 0), 60)
					if strings.Contains(sql, "$__") {
						t.Fatalf("a macro is left unexpanded:\n%s", sql)
					}
					sql = strings.ReplaceAll(sql, "sluice.sluice_", db+".sluice_")
					if rows := ch.rows(t, sql); rows == 0 {
						t.Errorf("query returned no rows over data it should see:\n%s", sql)
					}
				})
			}
		}
	}
}

var timeFilter = regexp.MustCompile(`\$__timeFilter\(([^)]+)\)`)

// expandMacros replaces the grafana-clickhouse-datasource macros the
// dashboards use with the SQL the plugin sends.
func expandMacros(sql string, from, to time.Time, intervalSeconds int) string {
	f, tt := fmt.Sprintf("toDateTime(%d)", from.Unix()), fmt.Sprintf("toDateTime(%d)", to.Unix())
	sql = timeFilter.ReplaceAllString(sql, "$1 >= "+f+" AND $1 <= "+tt)
	return strings.NewReplacer(
		"$__fromTime", f,
		"$__toTime", tt,
		"$__interval_s", fmt.Sprint(intervalSeconds),
	).Replace(sql)
}

// clickhouse talks to ClickHouse's HTTP interface.
type clickhouse struct{ base string }

func (c clickhouse) post(t *testing.T, sql string) []byte {
	t.Helper()
	resp, err := http.Post(c.base+"/?"+url.Values{"wait_end_of_query": {"1"}}.Encode(), "text/plain", strings.NewReader(sql))
	if err != nil {
		t.Fatalf("ClickHouse at %s: %v", c.base, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("ClickHouse answered HTTP %d to:\n%s\n%s", resp.StatusCode, sql, body)
	}
	return body
}

func (c clickhouse) exec(t *testing.T, sql string) { t.Helper(); c.post(t, sql) }

// rows runs a query and returns how many rows it returned.
func (c clickhouse) rows(t *testing.T, sql string) int {
	t.Helper()
	var out struct {
		Rows int `json:"rows"`
	}
	body := c.post(t, sql+"\nFORMAT JSON")
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("decode the answer to:\n%s\n%s: %v", sql, body, err)
	}
	return out.Rows
}
