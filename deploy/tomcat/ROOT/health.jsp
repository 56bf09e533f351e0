<%--
  A cheap liveness answer for active health checks: no session is created,
  so a check every second does not fill the session store.
--%><%@ page contentType="text/plain; charset=UTF-8" session="false" trimDirectiveWhitespaces="true"
%><%
    response.setHeader("Cache-Control", "no-store");
    out.write("status=ok\nnode=" + System.getProperty("edgepin.node", "") + "\n");
%>
