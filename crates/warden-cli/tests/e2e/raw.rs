//! A raw-socket PostgreSQL client: sends exactly the bytes a test wants and keeps every byte it receives.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct RawClient {
    pub stream: TcpStream,
    /// Everything received so far, in order.
    pub received: Vec<u8>,
    buffer: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Message {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Message {
    /// The NUL-separated strings of the body.
    pub fn strings(&self) -> Vec<String> {
        self.body.split(|&byte| byte == 0).map(|part| String::from_utf8_lossy(part).into_owned()).collect()
    }

    /// The `C` (SQLSTATE) and `M` (message) fields of an ErrorResponse or NoticeResponse.
    pub fn error(&self) -> (String, String) {
        let mut code = String::new();
        let mut message = String::new();
        for field in self.body.split(|&byte| byte == 0) {
            match field.first() {
                Some(b'C') => code = String::from_utf8_lossy(&field[1..]).into_owned(),
                Some(b'M') => message = String::from_utf8_lossy(&field[1..]).into_owned(),
                _ => {}
            }
        }
        (code, message)
    }
}

pub fn startup_packet(parameters: &[(&str, &str)]) -> Vec<u8> {
    let mut body = 196_608i32.to_be_bytes().to_vec();
    for (key, value) in parameters {
        body.extend_from_slice(key.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend(body);
    packet
}

pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

pub fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    message(b'Q', &body)
}

impl RawClient {
    pub async fn connect(address: std::net::SocketAddr) -> RawClient {
        let stream = TcpStream::connect(address).await.expect("connect to warden");
        RawClient { stream, received: Vec::new(), buffer: Vec::new() }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// The next message, or None when the server closed the connection.
    pub async fn read_message(&mut self) -> Option<Message> {
        loop {
            if self.buffer.len() >= 5 {
                let length = u32::from_be_bytes(self.buffer[1..5].try_into().unwrap()) as usize;
                if self.buffer.len() > length {
                    let body = self.buffer[5..1 + length].to_vec();
                    let tag = self.buffer[0];
                    self.buffer.drain(..1 + length);
                    return Some(Message { tag, body });
                }
            }
            let mut chunk = [0u8; 8192];
            let read = tokio::time::timeout(std::time::Duration::from_secs(20), self.stream.read(&mut chunk))
                .await
                .expect("server answers within 20 s")
                .unwrap_or(0);
            if read == 0 {
                return None;
            }
            self.received.extend_from_slice(&chunk[..read]);
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }

    /// Reads until ReadyForQuery (included) or the connection closes.
    pub async fn read_until_ready(&mut self) -> Vec<Message> {
        let mut messages = Vec::new();
        while let Some(message) = self.read_message().await {
            let done = message.tag == b'Z';
            messages.push(message);
            if done {
                break;
            }
        }
        messages
    }

    /// Startup with `parameters`, answering the password request with `password`.
    pub async fn login(
        address: std::net::SocketAddr,
        parameters: &[(&str, &str)],
        password: &str,
    ) -> (RawClient, Vec<Message>) {
        let mut client = RawClient::connect(address).await;
        client.send(&startup_packet(parameters)).await;
        let request = client.read_message().await.expect("authentication request");
        assert_eq!(request.tag, b'R', "expected an authentication request");
        assert_eq!(request.body, 3i32.to_be_bytes(), "warden asks for a cleartext password");
        let mut body = password.as_bytes().to_vec();
        body.push(0);
        client.send(&message(b'p', &body)).await;
        let messages = client.read_until_ready().await;
        (client, messages)
    }
}
