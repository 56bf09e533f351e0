<%--
  slow.jsp?ms=N[&flush=1]

  Answers after sleeping N milliseconds (0 <= N <= 600000), to provoke a
  proxy's upstream timeout. With flush=1 the status, headers and the first
  line are sent at once and the rest after the sleep: a response that
  stalls midway rather than one that never starts. No session is created.

    node=<edgepin.node>
    slept_ms=<N>
--%><%@ page contentType="text/plain; charset=UTF-8" session="false" trimDirectiveWhitespaces="true"
%><%!
    private static final long MAX_SLEEP_MS = 600000;
%><%
    response.setHeader("Cache-Control", "no-store");
    long ms;
    try {
        ms = Long.parseLong(String.valueOf(request.getParameter("ms")));
    } catch (NumberFormatException e) {
        ms = -1;
    }
    if (ms < 0 || ms > MAX_SLEEP_MS) {
        response.setStatus(400);
        out.write("error=ms must be between 0 and " + MAX_SLEEP_MS + "\n");
        return;
    }
    out.write("node=" + System.getProperty("edgepin.node", "") + "\n");
    if ("1".equals(request.getParameter("flush"))) {
        out.flush();
    }
    Thread.sleep(ms);
    out.write("slept_ms=" + ms + "\n");
%>
