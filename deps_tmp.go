package main
import (
 _ "github.com/redis/go-redis/v9"
 _ "github.com/gin-gonic/gin"
 _ "github.com/jmoiron/sqlx"
 _ "github.com/go-sql-driver/mysql"
 _ "github.com/shopspring/decimal"
 _ "github.com/alicebob/miniredis/v2"
 _ "modernc.org/sqlite"
 _ "github.com/golang-jwt/jwt/v5"
 _ "github.com/prometheus/client_golang/prometheus"
)
func main(){}
