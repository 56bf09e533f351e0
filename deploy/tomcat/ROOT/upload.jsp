<%--
  POST any body (Content-Length or chunked, any size): the answer is its
  byte count and SHA-256, computed while the body streams in, so memory use
  does not grow with the upload.

    bytes=<count of body bytes read>
    sha256=<lowercase hex>
    content_length=<Content-Length header as received, or empty>
    transfer_encoding=<Transfer-Encoding header as received, or empty>
    node=<edgepin.node>

  Only POST: JSPs accept GET, HEAD and POST, and a GET has no body to hash.
  The page never reads request parameters, which would consume a form body
  before it could be hashed. No session is created.
--%><%@ page contentType="text/plain; charset=UTF-8" session="false" trimDirectiveWhitespaces="true"
    import="java.io.InputStream,java.security.MessageDigest"
%><%!
    // Large enough that a 1 GB upload costs few read calls, small enough
    // to keep per-request memory negligible.
    private static final int READ_BUFFER_BYTES = 64 * 1024;
    private static final char[] HEX = "0123456789abcdef".toCharArray();

    private static String hex(byte[] bytes) {
        char[] out = new char[bytes.length * 2];
        for (int i = 0; i < bytes.length; i++) {
            out[2 * i] = HEX[(bytes[i] >> 4) & 0xf];
            out[2 * i + 1] = HEX[bytes[i] & 0xf];
        }
        return new String(out);
    }

    private static String orEmpty(String s) {
        return s == null ? "" : s;
    }
%><%
    response.setHeader("Cache-Control", "no-store");
    if (!"POST".equals(request.getMethod())) {
        response.setHeader("Allow", "POST");
        response.setStatus(405);
        out.write("error=upload.jsp takes a POST body\n");
        return;
    }

    MessageDigest sha256 = MessageDigest.getInstance("SHA-256");
    byte[] buffer = new byte[READ_BUFFER_BYTES];
    long total = 0;
    InputStream body = request.getInputStream();
    for (int n; (n = body.read(buffer)) != -1; ) {
        sha256.update(buffer, 0, n);
        total += n;
    }

    out.write("bytes=" + total + "\n"
        + "sha256=" + hex(sha256.digest()) + "\n"
        + "content_length=" + orEmpty(request.getHeader("Content-Length")) + "\n"
        + "transfer_encoding=" + orEmpty(request.getHeader("Transfer-Encoding")) + "\n"
        + "node=" + System.getProperty("edgepin.node", "") + "\n");
%>
