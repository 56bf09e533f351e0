<%--
  Every request header as this Tomcat received it (after RemoteIpValve,
  which removes the X-Forwarded-For it consumed), one "Name: value" line per
  value, in arrival order. Used to prove what a proxy forwarded and what it
  stripped. No session is created.
--%><%@ page contentType="text/plain; charset=UTF-8" session="false" trimDirectiveWhitespaces="true"
%><%
    response.setHeader("Cache-Control", "no-store");
    StringBuilder lines = new StringBuilder(1024);
    java.util.Enumeration<String> names = request.getHeaderNames();
    while (names.hasMoreElements()) {
        String name = names.nextElement();
        java.util.Enumeration<String> values = request.getHeaders(name);
        while (values.hasMoreElements()) {
            lines.append(name).append(": ").append(values.nextElement()).append('\n');
        }
    }
    out.write(lines.toString());
%>
