<%--
  Edgepin demo page: what this Tomcat saw of the request, after RemoteIpValve.

  Plain text by default, one key=value line per fact, in a fixed order, so
  that curl users can read it and tests can parse it (split each line at its
  first '='; an absent header gives an empty value). A browser (Accept:
  text/html) or ?format=html gets the same lines, also inside
  <pre id="edgepin-kv">, plus a table; ?format=text forces plain text.

  Each request increments a counter kept in the HTTP session, so a client
  that stays on one Tomcat sees 1, 2, 3, ... and a client moved to another
  node starts again at 1 with a new session id.
--%><%@ page contentType="text/plain; charset=UTF-8" trimDirectiveWhitespaces="true"
%><%!
    // Values come from the client (Host, X-Forwarded-*): keep each on its
    // own line whatever they contain.
    private static String oneLine(Object value) {
        if (value == null) {
            return "";
        }
        String s = String.valueOf(value);
        StringBuilder out = new StringBuilder(s.length());
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            out.append(c < 0x20 || c == 0x7f ? '?' : c);
        }
        return out.toString();
    }

    private static String html(String s) {
        StringBuilder out = new StringBuilder(s.length() + 16);
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '&': out.append("&amp;"); break;
                case '<': out.append("&lt;"); break;
                case '>': out.append("&gt;"); break;
                case '"': out.append("&quot;"); break;
                case '\'': out.append("&#39;"); break;
                default: out.append(c);
            }
        }
        return out.toString();
    }
%><%
    int counter;
    // Two requests of one session may run at once (a browser's parallel
    // connections); the count must not lose an increment.
    synchronized (session) {
        Object previous = session.getAttribute("edgepin.counter");
        counter = (previous instanceof Integer ? (Integer) previous : 0) + 1;
        session.setAttribute("edgepin.counter", counter);
    }

    String[][] facts = {
        {"node", oneLine(System.getProperty("edgepin.node", ""))},
        {"counter", Integer.toString(counter)},
        {"session_id", oneLine(session.getId())},
        {"session_new", Boolean.toString(session.isNew())},
        {"remote_addr", oneLine(request.getRemoteAddr())},
        {"scheme", oneLine(request.getScheme())},
        {"secure", Boolean.toString(request.isSecure())},
        {"server_name", oneLine(request.getServerName())},
        {"server_port", Integer.toString(request.getServerPort())},
        {"local_addr", oneLine(request.getLocalAddr())},
        {"local_port", Integer.toString(request.getLocalPort())},
        {"method", oneLine(request.getMethod())},
        {"request_uri", oneLine(request.getRequestURI())},
        {"protocol", oneLine(request.getProtocol())},
        {"x_forwarded_for", oneLine(request.getHeader("X-Forwarded-For"))},
        {"x_forwarded_proto", oneLine(request.getHeader("X-Forwarded-Proto"))},
        {"x_forwarded_port", oneLine(request.getHeader("X-Forwarded-Port"))},
        // Set by an edgepin-node-proxy that received this request from
        // another node over the peer link (the node's name): tells a relayed
        // request from one that reached its owner directly.
        {"x_edgepin_relayed", oneLine(request.getHeader("X-Edgepin-Relayed"))},
    };

    StringBuilder lines = new StringBuilder(512);
    for (String[] fact : facts) {
        lines.append(fact[0]).append('=').append(fact[1]).append('\n');
    }

    String format = request.getParameter("format");
    String accept = request.getHeader("Accept");
    boolean asHtml = "html".equals(format)
        || (format == null && accept != null && accept.contains("text/html"));

    // Every answer is about this request and this session: never cached.
    response.setHeader("Cache-Control", "no-store");
    if (!asHtml) {
        out.write(lines.toString());
        return;
    }
    response.setContentType("text/html; charset=UTF-8");
    String node = html(facts[0][1]);
%><!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Edgepin demo: <%= node %></title>
<style>
body { font-family: sans-serif; margin: 2em; }
table { border-collapse: collapse; }
td { border: 1px solid #ccc; padding: 0.2em 0.6em; font-family: monospace; }
.big { font-size: 2em; }
</style>
</head>
<body>
<p class="big">Served by <b id="edgepin-node"><%= node %></b>,
request <b id="edgepin-counter"><%= counter %></b> of this session.</p>
<table>
<% for (String[] fact : facts) { %>
<tr><td><%= html(fact[0]) %></td><td><%= html(fact[1]) %></td></tr>
<% } %>
</table>
<pre id="edgepin-kv"><%= html(lines.toString()) %></pre>
</body>
</html>
